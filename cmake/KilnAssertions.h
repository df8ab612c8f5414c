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

// LLVM's BumpPtrAllocator poisons a new slab and unpoisons each allocation
// in inline code, when that code is compiled with ASan. The distribution's
// LLVM and MLIR are not: when the linker keeps kiln's instrumented copy of
// AllocateSlow (kiln's attribute storage instantiates it) for the whole
// program, MLIR's uninstrumented fast path never unpoisons what it hands
// out, and ASan reports a use-after-poison in MLIRContext's constructor.
// kiln's copies must behave like the library's: no manual poisoning.
#if defined(__has_feature)
#if __has_feature(address_sanitizer)
#include <sanitizer/asan_interface.h>
#undef ASAN_POISON_MEMORY_REGION
#undef ASAN_UNPOISON_MEMORY_REGION
#define __asan_poison_memory_region(p, size) ((void)(p), (void)(size))
#define __asan_unpoison_memory_region(p, size) ((void)(p), (void)(size))
#endif
#endif
