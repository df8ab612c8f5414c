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

SmallVector<StringRef, 2> kiln::groupAxes(StringRef group) {
  SmallVector<StringRef, 2> parts;
  group.split(parts, ',');
  return parts;
}

int64_t MeshAttr::getAxisSize(StringRef name) const {
  // A collective's group may name several axes.
  int64_t product = 1;
  for (StringRef part : groupAxes(name))
    for (auto [n, size] : llvm::zip_equal(getNames(), getSizes()))
      if (n.getValue() == part)
        product *= size;
  return product;
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
  SmallVector<Axes> dims;
  SmallVector<StringAttr> partial;
  Builder &b = parser.getBuilder();
  auto axisName = [&](SmallVectorImpl<StringAttr> &into) -> ParseResult {
    std::string name;
    if (parser.parseKeywordOrString(&name))
      return failure();
    if (name != "_")
      into.push_back(b.getStringAttr(name));
    return success();
  };
  // A dimension: `_`, one axis, or `{a, b}` (major first).
  auto dim = [&]() -> ParseResult {
    Axes axes;
    if (succeeded(parser.parseOptionalLBrace())) {
      if (parser.parseCommaSeparatedList([&] { return axisName(axes); }) || parser.parseRBrace())
        return failure();
    } else if (axisName(axes)) {
      return failure();
    }
    dims.push_back(std::move(axes));
    return success();
  };
  if (parser.parseLess() || parser.parseCommaSeparatedList(AsmParser::Delimiter::Square, dim))
    return {};
  if (succeeded(parser.parseOptionalComma()))
    if (parser.parseKeyword("partial") || parser.parseEqual() ||
        parser.parseCommaSeparatedList(AsmParser::Delimiter::Square,
                                       [&] { return axisName(partial); }))
      return {};
  if (parser.parseGreater())
    return {};
  SmallVector<ArrayAttr> arrays;
  for (const Axes &axes : dims)
    arrays.push_back(b.getArrayAttr(SmallVector<Attribute>(axes.begin(), axes.end())));
  return getChecked([&] { return parser.emitError(parser.getNameLoc()); }, parser.getContext(),
                    arrays, partial);
}

void ShardingAttr::print(AsmPrinter &printer) const {
  printer << "<[";
  llvm::interleaveComma(getAllAxes(), printer, [&](const Axes &axes) {
    if (axes.empty())
      printer << "_";
    else if (axes.size() == 1)
      printer << axes[0].getValue();
    else {
      printer << "{";
      llvm::interleaveComma(axes, printer, [&](StringAttr a) { printer << a.getValue(); });
      printer << "}";
    }
  });
  printer << "]";
  if (!getPartial().empty()) {
    printer << ", partial = [";
    llvm::interleaveComma(getPartial(), printer, [&](StringAttr a) { printer << a.getValue(); });
    printer << "]";
  }
  printer << ">";
}

LogicalResult ShardingAttr::verify(function_ref<InFlightDiagnostic()> emitError,
                                   ArrayRef<ArrayAttr> dims, ArrayRef<StringAttr> partial) {
  SmallVector<StringRef> seen;
  for (auto [d, list] : llvm::enumerate(dims))
    for (Attribute a : list) {
      auto name = dyn_cast<StringAttr>(a);
      if (!name || name.getValue().empty() || name.getValue() == "_")
        return emitError() << "dimension " << d
                           << " of a sharding names an axis that is not a "
                              "name";
      if (llvm::is_contained(seen, name.getValue()))
        return emitError() << "mesh axis '" << name.getValue()
                           << "' splits two dimensions of one sharding (or one twice)";
      seen.push_back(name.getValue());
    }
  for (StringAttr a : partial)
    if (llvm::is_contained(seen, a.getValue()))
      return emitError() << "mesh axis '" << a.getValue()
                         << "' both splits a dimension and sums partial values";
  return success();
}

ShardingAttr ShardingAttr::of(MLIRContext *context, ArrayRef<Axes> dims,
                              ArrayRef<StringAttr> partial) {
  SmallVector<ArrayAttr> lists;
  for (const Axes &axes : dims)
    lists.push_back(ArrayAttr::get(context, SmallVector<Attribute>(axes.begin(), axes.end())));
  return get(context, lists, partial);
}

ShardingAttr ShardingAttr::getReplicated(MLIRContext *context, int64_t rank) {
  return of(context, SmallVector<Axes>(rank), {});
}

bool ShardingAttr::isReplicated() const {
  return getPartial().empty() && llvm::all_of(getDims(), [](ArrayAttr a) { return a.empty(); });
}

ShardingAttr::Axes ShardingAttr::getAxes(unsigned d) const {
  Axes axes;
  if (d < getDims().size())
    for (Attribute a : getDims()[d])
      axes.push_back(cast<StringAttr>(a));
  return axes;
}

SmallVector<ShardingAttr::Axes> ShardingAttr::getAllAxes() const {
  SmallVector<Axes> all;
  for (unsigned d = 0; d < getDims().size(); ++d)
    all.push_back(getAxes(d));
  return all;
}

bool ShardingAttr::splitsOver(StringRef axis) const {
  return llvm::any_of(getAllAxes(), [&](const Axes &axes) {
    return llvm::any_of(axes, [&](StringAttr a) { return a.getValue() == axis; });
  });
}

ShardingAttr ShardingAttr::withoutPartial() const {
  return get(getContext(), getDims(), {});
}

int64_t ShardingAttr::splitSize(unsigned d, MeshAttr mesh) const {
  int64_t n = 1;
  for (StringAttr a : getAxes(d))
    n *= mesh.getAxisSize(a.getValue());
  return n;
}

SmallVector<int64_t> ShardingAttr::localShape(ArrayRef<int64_t> globalShape, MeshAttr mesh) const {
  SmallVector<int64_t> local(globalShape);
  for (auto [d, size] : llvm::enumerate(local))
    size /= splitSize(d, mesh);
  return local;
}
