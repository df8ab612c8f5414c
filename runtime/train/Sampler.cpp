//===- Sampler.cpp - choosing the next token from logits -------------------===//

#include "runtime/train/Sampler.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

namespace kiln {

int32_t sampleToken(const float *logits, int64_t vocab, const SamplingOptions &o, Rng &rng) {
  if (o.greedy || o.temperature <= 0.0)
    return static_cast<int32_t>(std::max_element(logits, logits + vocab) - logits);
  std::vector<int32_t> order(static_cast<size_t>(vocab));
  std::iota(order.begin(), order.end(), 0);
  int64_t k = o.topK > 0 ? std::min(o.topK, vocab) : vocab;
  // Ties keep the lower id first, so a seed gives the same draw everywhere.
  std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](int32_t a, int32_t b) {
    return logits[a] > logits[b] || (logits[a] == logits[b] && a < b);
  });
  double top = logits[order[0]], sum = 0;
  std::vector<double> p(static_cast<size_t>(k));
  for (int64_t i = 0; i < k; ++i)
    sum += (p[i] = std::exp((logits[order[i]] - top) / o.temperature));
  double u = rng.uniform() * sum;
  for (int64_t i = 0; i < k; ++i) {
    u -= p[i];
    if (u < 0)
      return order[i];
  }
  return order[k - 1];
}

} // namespace kiln
