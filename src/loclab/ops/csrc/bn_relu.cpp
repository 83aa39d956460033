// Training-mode BatchNorm followed by ReLU, fused, for bf16 channels-last CPU tensors.
//
// x is seen as an [M, C] row-major matrix (M = N*H*W pixels, C channels contiguous), which is what a
// channels-last NCHW tensor is in memory. Forward reads x twice (statistics, then normalise + ReLU);
// backward reads the incoming gradient and x twice (two reductions, then the input gradient). The
// ReLU mask is recomputed from x, so nothing besides x and two per-channel vectors is saved.
//
// Reductions run over fixed blocks of rows, each summed in float and then added in double in block
// order, so results do not depend on the number of threads. Statistics are taken around a per-channel
// shift (the first pixel's value), so a large mean does not cancel the variance away.
// Built with -ffp-contract=off: forward and backward compute the mask with the same float operations.

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

namespace {

constexpr int64_t kBlockRows = 256;

inline float bf16_to_float(uint16_t v) {
  uint32_t u = uint32_t(v) << 16;
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

inline uint16_t float_to_bf16(float f) {  // round to nearest even, NaN stays NaN
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  return (f != f) ? uint16_t(0x7fc0) : uint16_t(rounded);
}

void check_input(const at::Tensor& t, const char* name) {
  TORCH_CHECK(t.device().is_cpu() && t.scalar_type() == at::kBFloat16 && t.dim() == 4 &&
                  t.is_contiguous(at::MemoryFormat::ChannelsLast),
              name, ": expected a 4-D bfloat16 channels-last CPU tensor");
}

// y = x * scale + offset before the ReLU; forward and backward both derive it from the float mean and
// invstd with this function, so the backward pass sees exactly the forward pass's ReLU mask.
void normalisation(const float* w, const float* b, const float* mean, const float* invstd, int64_t C,
                   std::vector<float>& scale, std::vector<float>& offset) {
  scale.resize(C);
  offset.resize(C);
  for (int64_t c = 0; c < C; ++c) {
    scale[c] = float(double(w[c]) * invstd[c]);
    offset[c] = float(double(b[c]) - double(mean[c]) * w[c] * invstd[c]);
  }
}

// Rows are processed k at a time as one flat segment of k*C values, with per-channel constants repeated
// k times ("tiled"), so the inner loops are long and vectorise without per-row overhead. k is a power
// of two dividing kBlockRows, so every block starts a segment at channel 0.
int64_t rows_per_segment(int64_t C) {
  int64_t k = 1;
  while (k < kBlockRows && C * k * 2 <= 1024) k *= 2;
  return k;
}

std::vector<float> tiled(const std::vector<float>& v, int64_t k) {
  std::vector<float> out;
  out.reserve(v.size() * k);
  for (int64_t i = 0; i < k; ++i) out.insert(out.end(), v.begin(), v.end());
  return out;
}

// Two per-channel sums over all rows, block by block; `seg(offset, n, acc_a, acc_b)` adds the n values
// starting at flat offset into the tiled accumulators. Returns 2*C doubles (all a, then all b).
template <typename Seg>
std::vector<double> reduce_rows(int64_t M, int64_t C, Seg seg) {
  const int64_t k = rows_per_segment(C), T = k * C;
  const int64_t blocks = (M + kBlockRows - 1) / kBlockRows;
  std::vector<double> partial(blocks * 2 * C);
  at::parallel_for(0, blocks, 1, [&](int64_t b0, int64_t b1) {
    std::vector<float> a(T), b(T);
    for (int64_t blk = b0; blk < b1; ++blk) {
      std::fill(a.begin(), a.end(), 0.f);
      std::fill(b.begin(), b.end(), 0.f);
      const int64_t r1 = std::min(M, (blk + 1) * kBlockRows);
      for (int64_t r = blk * kBlockRows; r < r1; r += k) seg(r * C, std::min(k, r1 - r) * C, a.data(), b.data());
      double* out = partial.data() + blk * 2 * C;
      for (int64_t c = 0; c < C; ++c) {
        double sa = 0, sb = 0;
        for (int64_t i = 0; i < k; ++i) {
          sa += a[i * C + c];
          sb += b[i * C + c];
        }
        out[c] = sa;
        out[C + c] = sb;
      }
    }
  });
  std::vector<double> total(2 * C, 0.0);
  for (int64_t blk = 0; blk < blocks; ++blk)
    for (int64_t i = 0; i < 2 * C; ++i) total[i] += partial[blk * 2 * C + i];
  return total;
}

// `seg(offset, n)` for every segment of every row, in parallel.
template <typename Seg>
void map_rows(int64_t M, int64_t C, Seg seg) {
  const int64_t k = rows_per_segment(C);
  at::parallel_for(0, M, kBlockRows, [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; r += k) seg(r * C, std::min(k, r1 - r) * C);
  });
}

inline void stats_segment(const uint16_t* __restrict x, const float* __restrict shift, float* __restrict s,
                          float* __restrict q, int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    const float v = bf16_to_float(x[j]) - shift[j];
    s[j] += v;
    q[j] += v * v;
  }
}

inline void forward_segment(const uint16_t* __restrict x, const float* __restrict scale, const float* __restrict offset,
                            uint16_t* __restrict y, int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    const float v = bf16_to_float(x[j]) * scale[j] + offset[j];
    y[j] = float_to_bf16(v > 0.f ? v : 0.f);
  }
}

inline void grad_sums_segment(const uint16_t* __restrict x, const uint16_t* __restrict gy, const float* __restrict scale,
                              const float* __restrict offset, const float* __restrict mean, float* __restrict sg,
                              float* __restrict sgx, int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    const float xv = bf16_to_float(x[j]), gv = bf16_to_float(gy[j]);
    const float g = (xv * scale[j] + offset[j] > 0.f) ? gv : 0.f;
    sg[j] += g;
    sgx[j] += g * (xv - mean[j]);
  }
}

inline void grad_x_segment(const uint16_t* __restrict x, const uint16_t* __restrict gy, const float* __restrict scale,
                           const float* __restrict offset, const float* __restrict a, const float* __restrict k1,
                           const float* __restrict k0, uint16_t* __restrict gx, int64_t n) {
  for (int64_t j = 0; j < n; ++j) {
    const float xv = bf16_to_float(x[j]), gv = bf16_to_float(gy[j]);
    const float g = (xv * scale[j] + offset[j] > 0.f) ? gv : 0.f;
    gx[j] = float_to_bf16(a[j] * g + k1[j] * xv + k0[j]);
  }
}

// Returns (y, mean, invstd); updates running_mean / running_var (unbiased variance) in place.
std::tuple<at::Tensor, at::Tensor, at::Tensor> bn_relu_forward(const at::Tensor& x, const at::Tensor& weight,
                                                              const at::Tensor& bias, at::Tensor running_mean,
                                                              at::Tensor running_var, double momentum, double eps) {
  check_input(x, "x");
  const int64_t C = x.size(1), M = x.numel() / C, k = rows_per_segment(C);
  for (const at::Tensor* t : std::initializer_list<const at::Tensor*>{&weight, &bias, &running_mean, &running_var})
    TORCH_CHECK(t->numel() == C && t->is_contiguous(), "per-channel tensors must be contiguous with C values");
  TORCH_CHECK(running_mean.scalar_type() == at::kFloat && running_var.scalar_type() == at::kFloat,
              "running statistics must be float32");
  TORCH_CHECK(M > 1, "BatchNorm needs more than one value per channel in training");
  const auto w = weight.to(at::kFloat).contiguous(), b = bias.to(at::kFloat).contiguous();
  const uint16_t* xp = reinterpret_cast<const uint16_t*>(x.data_ptr<at::BFloat16>());

  std::vector<float> shift(C);
  for (int64_t c = 0; c < C; ++c) shift[c] = bf16_to_float(xp[c]);
  const auto shift_t = tiled(shift, k);
  auto sums = reduce_rows(M, C, [&](int64_t off, int64_t n, float* s, float* q) {
    stats_segment(xp + off, shift_t.data(), s, q, n);
  });

  auto mean = at::empty({C}, w.options()), invstd = at::empty({C}, w.options());
  float* rm = running_mean.data_ptr<float>();
  float* rv = running_var.data_ptr<float>();
  for (int64_t c = 0; c < C; ++c) {
    const double d = sums[c] / M;
    const double var = std::max(sums[C + c] / M - d * d, 0.0);
    const double m = shift[c] + d;
    mean.data_ptr<float>()[c] = float(m);
    invstd.data_ptr<float>()[c] = float(1.0 / std::sqrt(var + eps));
    rm[c] = float((1 - momentum) * rm[c] + momentum * m);
    rv[c] = float((1 - momentum) * rv[c] + momentum * var * M / (M - 1));
  }
  std::vector<float> scale, offset;
  normalisation(w.data_ptr<float>(), b.data_ptr<float>(), mean.data_ptr<float>(), invstd.data_ptr<float>(), C,
                scale, offset);
  const auto scale_t = tiled(scale, k), offset_t = tiled(offset, k);

  auto y = at::empty_like(x, at::MemoryFormat::ChannelsLast);
  uint16_t* yp = reinterpret_cast<uint16_t*>(y.data_ptr<at::BFloat16>());
  map_rows(M, C, [&](int64_t off, int64_t n) {
    forward_segment(xp + off, scale_t.data(), offset_t.data(), yp + off, n);
  });
  return {y, mean, invstd};
}

// Returns (grad_x, grad_weight, grad_bias), the parameters' gradients in float.
std::tuple<at::Tensor, at::Tensor, at::Tensor> bn_relu_backward(const at::Tensor& grad_y, const at::Tensor& x,
                                                               const at::Tensor& weight, const at::Tensor& bias,
                                                               const at::Tensor& mean, const at::Tensor& invstd) {
  check_input(x, "x");
  check_input(grad_y, "grad_y");
  TORCH_CHECK(grad_y.sizes() == x.sizes(), "grad_y and x differ in shape");
  const int64_t C = x.size(1), M = x.numel() / C, k = rows_per_segment(C);
  const auto w = weight.to(at::kFloat).contiguous(), b = bias.to(at::kFloat).contiguous();
  const float* wp = w.data_ptr<float>();
  const float* mp = mean.data_ptr<float>();
  const float* ip = invstd.data_ptr<float>();
  std::vector<float> scale, offset;
  normalisation(wp, b.data_ptr<float>(), mp, ip, C, scale, offset);
  const auto scale_t = tiled(scale, k), offset_t = tiled(offset, k);
  const auto mean_t = tiled(std::vector<float>(mp, mp + C), k);
  const uint16_t* xp = reinterpret_cast<const uint16_t*>(x.data_ptr<at::BFloat16>());
  const uint16_t* gp = reinterpret_cast<const uint16_t*>(grad_y.data_ptr<at::BFloat16>());

  // sums of the gradient reaching the BatchNorm output (g where the ReLU passed, else 0), and of it
  // times (x - mean)
  auto sums = reduce_rows(M, C, [&](int64_t off, int64_t n, float* sg, float* sgx) {
    grad_sums_segment(xp + off, gp + off, scale_t.data(), offset_t.data(), mean_t.data(), sg, sgx, n);
  });

  auto grad_w = at::empty({C}, w.options()), grad_b = at::empty({C}, w.options());
  std::vector<float> a(C), k1(C), k0(C);
  for (int64_t c = 0; c < C; ++c) {
    const double is = ip[c], sg = sums[c], sgx = sums[C + c];
    grad_w.data_ptr<float>()[c] = float(sgx * is);
    grad_b.data_ptr<float>()[c] = float(sg);
    // dx = w*is*g_relu - w*is/M * (sg + (x - mean) * is^2 * sgx)
    const double kc = wp[c] * is * is * is * sgx / M;
    a[c] = float(wp[c] * is);
    k1[c] = float(-kc);
    k0[c] = float(kc * mp[c] - wp[c] * is * sg / M);
  }
  const auto a_t = tiled(a, k), k1_t = tiled(k1, k), k0_t = tiled(k0, k);

  auto grad_x = at::empty_like(x, at::MemoryFormat::ChannelsLast);
  uint16_t* gxp = reinterpret_cast<uint16_t*>(grad_x.data_ptr<at::BFloat16>());
  map_rows(M, C, [&](int64_t off, int64_t n) {
    grad_x_segment(xp + off, gp + off, scale_t.data(), offset_t.data(), a_t.data(), k1_t.data(), k0_t.data(),
                   gxp + off, n);
  });
  return {grad_x, grad_w, grad_b};
}

}  // namespace

TORCH_LIBRARY(loclab_bn_relu, m) {
  m.def("forward(Tensor x, Tensor weight, Tensor bias, Tensor(a!) running_mean, Tensor(b!) running_var, "
        "float momentum, float eps) -> (Tensor, Tensor, Tensor)");
  m.def("backward(Tensor grad_y, Tensor x, Tensor weight, Tensor bias, Tensor mean, Tensor invstd) "
        "-> (Tensor, Tensor, Tensor)");
}

TORCH_LIBRARY_IMPL(loclab_bn_relu, CPU, m) {
  m.impl("forward", bn_relu_forward);
  m.impl("backward", bn_relu_backward);
}
