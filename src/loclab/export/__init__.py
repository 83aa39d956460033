"""Trained models out of loclab: ONNX and TorchScript files that carry their input scaling, optionally their
decoding (NMS, heatmap decode), and metadata saying what they are (docs/export.md).

- graphs.py: the modules that get traced (uint8 images in; detections / keypoints or raw outputs out)
- metadata.py: what a file says about itself (task, config, class or keypoint names, input, anchors)
- files.py: ``loclab export``: a checkpoint -> an ONNX or TorchScript file
- runtime.py: opening an exported file for ``loclab predict``
- dependencies.py: ``onnx`` / ``onnxruntime``, imported only when used
"""
