//===- VerifierTest.cpp - verifier messages name the op and both types -----===//

#include "tests/unit/TestSupport.h"

#include "gtest/gtest.h"

using namespace kiln;

namespace {

TEST(Verifier, ElementwiseMismatchNamesBothTypes) {
  auto ctx = test::makeContext();
  std::string errors = test::parseErrors(*ctx, R"(
    func.func @f(%a: tensor<2x3xf32>, %b: tensor<3x2xf32>) {
      %c = "kiln.add"(%a, %b) : (tensor<2x3xf32>, tensor<3x2xf32>) -> tensor<2x3xf32>
      return
    })");
  EXPECT_NE(errors.find("'kiln.add' op"), std::string::npos) << errors;
  EXPECT_NE(errors.find("tensor<2x3xf32>"), std::string::npos) << errors;
  EXPECT_NE(errors.find("tensor<3x2xf32>"), std::string::npos) << errors;
}

TEST(Verifier, ValidFunctionHasNoErrors) {
  auto ctx = test::makeContext();
  EXPECT_EQ(test::parseErrors(*ctx, R"(
    func.func @f(%a: tensor<2x3xf32> {kiln.input = "a"}) -> tensor<2x3xf32> {
      %c = kiln.add %a, %a : tensor<2x3xf32>
      return %c : tensor<2x3xf32>
    })"),
            "");
}

TEST(Verifier, DuplicateParamNamesAreRejected) {
  auto ctx = test::makeContext();
  std::string errors = test::parseErrors(*ctx, R"(
    func.func @f(%a: tensor<2xf32> {kiln.param = "w"}, %b: tensor<2xf32> {kiln.param = "w"}) {
      return
    })");
  EXPECT_NE(errors.find("both named \"w\""), std::string::npos) << errors;
}

} // namespace
