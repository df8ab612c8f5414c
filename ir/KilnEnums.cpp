//===- KilnEnums.cpp - generated enum definitions --------------------------===//

#include "ir/KilnOps.h"

#include "ir/KilnEnums.cpp.inc"
