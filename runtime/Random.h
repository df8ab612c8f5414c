//===- Random.h - the deterministic random numbers of kiln -----------------===//
//
// xoshiro256** (Blackman & Vigna 2018) seeded through splitmix64, with
// Box-Muller normals. Written out (not std::normal_distribution) so that a
// seed gives the same numbers with any standard library, and the whole state
// fits in a checkpoint.
//
//===----------------------------------------------------------------------===//

#ifndef KILN_RUNTIME_RANDOM_H
#define KILN_RUNTIME_RANDOM_H

#include "llvm/ADT/StringRef.h"

#include <array>
#include <cstdint>

namespace kiln {

class Rng {
public:
  explicit Rng(uint64_t seed = 0) { reseed(seed); }
  /// A stream derived from a seed and a name (one per parameter), so the
  /// numbers a parameter gets do not depend on the order of initialization.
  Rng(uint64_t seed, llvm::StringRef stream);

  void reseed(uint64_t seed);
  uint64_t next();
  /// Uniform in [0, 1).
  double uniform();
  /// Standard normal.
  double normal();
  /// Uniform integer in [0, n).
  uint64_t below(uint64_t n);

  std::array<uint64_t, 4> state() const { return s_; }
  void setState(const std::array<uint64_t, 4> &s) { s_ = s; }

private:
  std::array<uint64_t, 4> s_{};
};

} // namespace kiln

#endif // KILN_RUNTIME_RANDOM_H
