//===- Sampler.h - choosing the next token from logits ---------------------===//

#ifndef KILN_RUNTIME_TRAIN_SAMPLER_H
#define KILN_RUNTIME_TRAIN_SAMPLER_H

#include "runtime/Random.h"

#include <cstdint>

namespace kiln {

struct SamplingOptions {
  bool greedy = false;
  double temperature = 1.0;
  /// Keep only the k most likely tokens (0: all).
  int64_t topK = 0;
};

/// Picks a token among the first `vocab` logits: the argmax when greedy,
/// else a draw from softmax(logits / temperature) restricted to the top k.
int32_t sampleToken(const float *logits, int64_t vocab, const SamplingOptions &options, Rng &rng);

} // namespace kiln

#endif // KILN_RUNTIME_TRAIN_SAMPLER_H
