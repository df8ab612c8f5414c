//===- Schedule.h - learning-rate schedules --------------------------------===//

#ifndef KILN_RUNTIME_TRAIN_SCHEDULE_H
#define KILN_RUNTIME_TRAIN_SCHEDULE_H

#include <cstdint>
#include <string>

namespace kiln {

struct ScheduleOptions {
  /// "cosine", "linear", "constant" or "wsd" (warmup-stable-decay).
  std::string kind = "cosine";
  double maxLr = 6e-4;
  /// The final learning rate as a fraction of maxLr.
  double minLrRatio = 0.1;
  int64_t warmupSteps = 0;
  int64_t totalSteps = 1;
  /// wsd: the fraction of the steps, at the end, over which lr decays
  /// linearly to minLr (Hägele et al. 2024).
  double decayFraction = 0.2;
};

/// The learning rate of optimizer step `step` (0-based): linear warmup from
/// maxLr/warmup to maxLr, then the schedule's shape down to minLr at the
/// last step.
double learningRate(const ScheduleOptions &options, int64_t step);

} // namespace kiln

#endif // KILN_RUNTIME_TRAIN_SCHEDULE_H
