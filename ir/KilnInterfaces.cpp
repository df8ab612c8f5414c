//===- KilnInterfaces.cpp - generated interface definitions ----------------===//

#include "ir/KilnInterfaces.h"

#include "ir/KilnInterfaces.cpp.inc"
