//===- Random.cpp - xoshiro256** and Box-Muller ----------------------------===//

#include "runtime/Random.h"

#include <cmath>

namespace kiln {

static uint64_t splitmix64(uint64_t &x) {
  uint64_t z = (x += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

Rng::Rng(uint64_t seed, llvm::StringRef stream) {
  // FNV-1a of the stream name, mixed into the seed.
  uint64_t h = 0xcbf29ce484222325ull;
  for (char c : stream)
    h = (h ^ static_cast<uint8_t>(c)) * 0x100000001b3ull;
  reseed(seed ^ h);
}

void Rng::reseed(uint64_t seed) {
  for (uint64_t &w : s_)
    w = splitmix64(seed);
}

uint64_t Rng::next() {
  uint64_t result = rotl(s_[1] * 5, 7) * 9, t = s_[1] << 17;
  s_[2] ^= s_[0];
  s_[3] ^= s_[1];
  s_[1] ^= s_[2];
  s_[0] ^= s_[3];
  s_[2] ^= t;
  s_[3] = rotl(s_[3], 45);
  return result;
}

double Rng::uniform() { return static_cast<double>(next() >> 11) * 0x1.0p-53; }

double Rng::normal() {
  // Box-Muller; 1 - u keeps the logarithm's argument in (0, 1].
  double u = 1.0 - uniform(), v = uniform();
  return std::sqrt(-2.0 * std::log(u)) * std::cos(2.0 * M_PI * v);
}

uint64_t Rng::below(uint64_t n) { return n ? next() % n : 0; }

} // namespace kiln
