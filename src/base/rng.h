// Deterministic integer PRNGs: the same seed gives the same stream on every machine and compiler.
// splitmix64 seeds and mixes; xoshiro256** is the stream generator. uniform_f32() uses only integer ops and an
// exact float conversion (24 random bits * 2^-24), so no libm or std:: distribution enters the result.
// Thread-safety: one generator per thread.
#pragma once

#include <cstdint>

namespace citadel {

inline uint64_t splitmix64_next(uint64_t& state) {
  uint64_t z = (state += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

class Xoshiro256 {
 public:
  explicit Xoshiro256(uint64_t seed) {
    uint64_t sm = seed;
    for (auto& w : s_) w = splitmix64_next(sm);
  }
  uint64_t next() {
    const uint64_t result = rotl(s_[1] * 5, 7) * 9;
    const uint64_t t = s_[1] << 17;
    s_[2] ^= s_[0];
    s_[3] ^= s_[1];
    s_[1] ^= s_[2];
    s_[0] ^= s_[3];
    s_[2] ^= t;
    s_[3] = rotl(s_[3], 45);
    return result;
  }
  // Uniform in [0, 1), exactly representable (multiples of 2^-24).
  float uniform_f32() { return static_cast<float>(next() >> 40) * (1.0f / 16777216.0f); }
  // Approximately standard normal times `scale`: the sum of four 24-bit uniforms (Irwin-Hall, from two draws),
  // centred in integers, converted once and multiplied once (no a*b+c, so FMA contraction cannot change bytes).
  // Var(sum of 4 U[0,1)) = 1/3, so unit variance needs sqrt(3) * 2^-24 per integer step: pass
  // normal_step(scale) as `step`.
  float normalish_f32(float step) {
    const uint64_t a = next(), b = next();
    const int64_t sum = static_cast<int64_t>((a >> 40) + ((a >> 16) & 0xffffff) + (b >> 40) + ((b >> 16) & 0xffffff));
    return static_cast<float>(sum - (int64_t{2} << 24)) * step;
  }
  static float normal_step(double scale) { return static_cast<float>(scale * 1.7320508075688772 / 16777216.0); }

 private:
  static uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }
  uint64_t s_[4];
};

// Derives an independent seed for a sub-stream (e.g. one tensor) from a base seed and an id.
inline uint64_t derive_seed(uint64_t seed, uint64_t id) {
  uint64_t s = seed ^ (id * 0xd1b54a32d192ed03ull);
  splitmix64_next(s);
  return splitmix64_next(s);
}

}  // namespace citadel
