// KilnAssertions.h — included first in every C++ file of the
// KILN_ENABLE_ASSERTIONS build (CMakeLists.txt, -include). kiln's code then
// compiles without NDEBUG, against the distribution's LLVM and MLIR, which
// were built with NDEBUG. One LLVM type changes layout with NDEBUG:
// llvm::Statistic (TrackingStatistic vs NoopStatistic), a base of
// mlir::Pass::Statistic, whose constructor lives in MLIR's library. kiln
// must see the library's layout, so Statistic.h is read with NDEBUG set;
// assert() is re-enabled right after.
#pragma once
#define NDEBUG
#include "llvm/ADT/Statistic.h"
#undef NDEBUG
#include <cassert>
