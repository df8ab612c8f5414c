//===- TrainingKernels.cpp - global norm and AdamW on the CPU --------------===//

#include "runtime/cpu/KernelSupport.h"
#include "runtime/cpu/Kernels.h"

#include <cmath>

namespace kiln::cpu::kernels {

HostTensor globalNorm(llvm::ArrayRef<const HostTensor *> xs, DType resultType) {
  double sum = 0;
  for (const HostTensor *x : xs)
    for (int64_t i = 0; i < x->numel(); ++i) {
      double v = x->get(i);
      sum += v * v;
    }
  HostTensor out(resultType, {});
  out.set(0, std::sqrt(sum));
  return out;
}

std::tuple<HostTensor, HostTensor, HostTensor>
adamw(const HostTensor &p, const HostTensor &g, const HostTensor &m, const HostTensor &v,
      double lr, double step, double gradScale, double beta1, double beta2, double eps,
      double weightDecay) {
  HostTensor np(p.dtype(), p.shape()), nm(m.dtype(), m.shape()), nv(v.dtype(), v.shape());
  double correction1 = 1.0 - std::pow(beta1, step), correction2 = 1.0 - std::pow(beta2, step);
  parallelFor(p.numel(), kElementGrain, [&](int64_t begin, int64_t end) {
    for (int64_t i = begin; i < end; ++i) {
      double grad = g.get(i) * gradScale;
      double mi = beta1 * m.get(i) + (1.0 - beta1) * grad;
      double vi = beta2 * v.get(i) + (1.0 - beta2) * grad * grad;
      double update = (mi / correction1) / (std::sqrt(vi / correction2) + eps);
      np.set(i, p.get(i) * (1.0 - lr * weightDecay) - lr * update);
      nm.set(i, mi);
      nv.set(i, vi);
    }
  });
  return {np, nm, nv};
}

} // namespace kiln::cpu::kernels
