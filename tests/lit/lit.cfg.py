# lit configuration of kiln's FileCheck tests (tests/lit/).
import os
import shutil

import lit.formats

config.name = "kiln"
config.test_format = lit.formats.ShTest(execute_external=True)
config.suffixes = [".mlir", ".test"]
config.test_source_root = os.path.dirname(__file__)
config.test_exec_root = os.path.join(config.kiln_obj_root, "tests", "lit")
config.excludes = ["Inputs", "CMakeLists.txt", "lit.cfg.py", "lit.site.cfg.py"]

# kiln's tools first, then FileCheck/not/count from LLVM.
path = [config.kiln_tools_dir, config.llvm_tools_dir, config.environment.get("PATH", os.environ["PATH"])]
config.environment["PATH"] = os.pathsep.join(path)
# Tests must not depend on the user's cache or GPU.
config.environment["XDG_CACHE_HOME"] = os.path.join(config.test_exec_root, "cache")

config.substitutions.append(("%kiln_src", config.kiln_src_root))
config.substitutions.append(("%kiln_lib", config.kiln_lib_dir))
config.substitutions.append(("%kiln_bin", config.kiln_tools_dir))
config.substitutions.append(("%kiln_obj", config.kiln_obj_root))

if config.kiln_static_llvm:
    config.available_features.add("static-llvm")
# The SentencePiece tokenizer: kiln's module (built when libsentencepiece-dev
# is installed) and the reference command-line tools (Debian's sentencepiece).
if os.path.exists(os.path.join(config.kiln_lib_dir, "libkiln-sentencepiece.so")) and \
        shutil.which("spm_train") and shutil.which("spm_encode"):
    config.available_features.add("sentencepiece")
