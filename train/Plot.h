//===- Plot.h - the loss curve of a run as an SVG file ---------------------===//

#ifndef KILN_TRAIN_PLOT_H
#define KILN_TRAIN_PLOT_H

#include "llvm/ADT/ArrayRef.h"
#include "llvm/Support/Error.h"

#include <string>

namespace kiln::tooling {

struct LossPoint {
  double step, loss;
};

/// Writes train and validation loss against step as a standalone SVG
/// (axes with ticks, a legend, the title).
llvm::Error writeLossPlot(llvm::StringRef path, llvm::ArrayRef<LossPoint> train,
                          llvm::ArrayRef<LossPoint> val, llvm::StringRef title);

} // namespace kiln::tooling

#endif // KILN_TRAIN_PLOT_H
