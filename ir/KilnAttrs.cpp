//===- KilnAttrs.cpp - the mesh and sharding attributes --------------------===//

#include "ir/KilnAttrs.h"
#include "ir/KilnDialect.h"

#include "mlir/IR/Builders.h"
#include "llvm/ADT/TypeSwitch.h"

using namespace mlir;
using namespace kiln;

#define GET_ATTRDEF_CLASSES
#include "ir/KilnAttrs.cpp.inc"

void KilnDialect::registerAttributes() {
  addAttributes<
#define GET_ATTRDEF_LIST
#include "ir/KilnAttrs.cpp.inc"
      >();
}

//===----------------------------------------------------------------------===//
// #kiln.mesh<dp = 2, tp = 2>
//===----------------------------------------------------------------------===//

Attribute MeshAttr::parse(AsmParser &parser, Type) {
  SmallVector<StringAttr> names;
  SmallVector<int64_t> sizes;
  auto parseAxis = [&]() -> ParseResult {
    std::string name;
    int64_t size;
    if (parser.parseKeywordOrString(&name) || parser.parseEqual() || parser.parseInteger(size))
      return failure();
    names.push_back(parser.getBuilder().getStringAttr(name));
    sizes.push_back(size);
    return success();
  };
  if (parser.parseCommaSeparatedList(AsmParser::Delimiter::LessGreater, parseAxis))
    return {};
  return getChecked([&] { return parser.emitError(parser.getNameLoc()); },
                    parser.getContext(), names, sizes);
}

void MeshAttr::print(AsmPrinter &printer) const {
  printer << "<";
  llvm::interleaveComma(llvm::zip_equal(getNames(), getSizes()), printer, [&](auto axis) {
    printer << std::get<0>(axis).getValue() << " = " << std::get<1>(axis);
  });
  printer << ">";
}

LogicalResult MeshAttr::verify(function_ref<InFlightDiagnostic()> emitError,
                               ArrayRef<StringAttr> names, ArrayRef<int64_t> sizes) {
  if (names.size() != sizes.size())
    return emitError() << "a mesh needs one size per axis";
  for (auto [i, name] : llvm::enumerate(names)) {
    if (name.getValue().empty() || name.getValue() == "_")
      return emitError() << "mesh axis " << i << " needs a name ('_' means none)";
    if (sizes[i] < 1)
      return emitError() << "mesh axis '" << name.getValue() << "' has size " << sizes[i]
                         << "; sizes are at least 1";
    for (StringAttr other : names.take_front(i))
      if (other == name)
        return emitError() << "mesh axis '" << name.getValue() << "' appears twice";
  }
  return success();
}

int64_t MeshAttr::getAxisSize(StringRef name) const {
  for (auto [n, size] : llvm::zip_equal(getNames(), getSizes()))
    if (n.getValue() == name)
      return size;
  return 1;
}

int64_t MeshAttr::getNumRanks() const {
  int64_t n = 1;
  for (int64_t size : getSizes())
    n *= size;
  return n;
}

//===----------------------------------------------------------------------===//
// #kiln.sharding<[dp, _], partial = [tp]>
//===----------------------------------------------------------------------===//

Attribute ShardingAttr::parse(AsmParser &parser, Type) {
  SmallVector<StringAttr> dims, partial;
  auto axisList = [&](SmallVectorImpl<StringAttr> &into) {
    return parser.parseCommaSeparatedList(AsmParser::Delimiter::Square, [&]() -> ParseResult {
      std::string name;
      if (parser.parseKeywordOrString(&name))
        return failure();
      into.push_back(parser.getBuilder().getStringAttr(name == "_" ? "" : name));
      return success();
    });
  };
  if (parser.parseLess() || axisList(dims))
    return {};
  if (succeeded(parser.parseOptionalComma()))
    if (parser.parseKeyword("partial") || parser.parseEqual() || axisList(partial))
      return {};
  if (parser.parseGreater())
    return {};
  return get(parser.getContext(), dims, partial);
}

void ShardingAttr::print(AsmPrinter &printer) const {
  auto axes = [&](ArrayRef<StringAttr> list) {
    printer << "[";
    llvm::interleaveComma(list, printer, [&](StringAttr a) {
      printer << (a.getValue().empty() ? StringRef("_") : a.getValue());
    });
    printer << "]";
  };
  printer << "<";
  axes(getDims());
  if (!getPartial().empty()) {
    printer << ", partial = ";
    axes(getPartial());
  }
  printer << ">";
}

ShardingAttr ShardingAttr::getReplicated(MLIRContext *context, int64_t rank) {
  SmallVector<StringAttr> dims(rank, StringAttr::get(context, ""));
  return get(context, dims, {});
}

bool ShardingAttr::isReplicated() const {
  return getPartial().empty() &&
         llvm::all_of(getDims(), [](StringAttr a) { return a.getValue().empty(); });
}

StringRef ShardingAttr::getAxis(unsigned d) const {
  return d < getDims().size() ? getDims()[d].getValue() : StringRef();
}

ShardingAttr ShardingAttr::withoutPartial() const {
  return get(getContext(), getDims(), {});
}

SmallVector<int64_t> ShardingAttr::localShape(ArrayRef<int64_t> globalShape, MeshAttr mesh) const {
  SmallVector<int64_t> local(globalShape);
  for (auto [d, size] : llvm::enumerate(local))
    if (StringRef axis = getAxis(d); !axis.empty())
      size /= mesh.getAxisSize(axis);
  return local;
}
