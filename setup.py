"""Build script for hotspot-erc's compiled extension ``hotspot_erc._C``.

C++ sources in ``csrc/`` are always compiled. CUDA sources (``*.cu``) are compiled when the
installed torch was built with CUDA and an ``nvcc`` can be found; no GPU is needed. A failure to
build the extension never fails the install: the package falls back to its Triton/reference
paths and ``python -m hotspot_erc.info`` explains what is missing.
"""
from __future__ import annotations

import glob
import json
import os
import shutil
import sys
import sysconfig

from setuptools import setup

ROOT = os.path.dirname(os.path.abspath(__file__))


def _log(msg: str) -> None:
    print(f"[hotspot-erc setup] {msg}", file=sys.stderr)


def find_cuda_home() -> str | None:
    """A toolkit folder holding bin/nvcc and include/cuda_runtime.h, found from nvcc if needed."""
    candidates = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH")]
    nvcc = shutil.which("nvcc")
    if nvcc:
        candidates.append(os.path.dirname(os.path.dirname(os.path.realpath(nvcc))))
        # Some images ship nvcc as a wrapper script that execs the real one.
        try:
            with open(nvcc, "rb") as fh:
                head = fh.read(4096)
            if head.startswith(b"#!"):
                for tok in head.decode(errors="ignore").split():
                    if tok.endswith("/bin/nvcc"):
                        candidates.append(os.path.dirname(os.path.dirname(tok)))
        except OSError:
            pass
    candidates.append("/usr/local/cuda")
    candidates.extend(sorted(glob.glob("/usr/local/cuda-*"), reverse=True))
    for cand in candidates:
        if cand and os.path.isfile(os.path.join(cand, "bin", "nvcc")) and os.path.isfile(
            os.path.join(cand, "include", "cuda_runtime.h")
        ):
            return cand
    return None


def pip_nvidia_include_dirs() -> list[str]:
    """Headers of pip's nvidia-* wheels (cuBLAS, cuSPARSE, ...) that torch's headers include."""
    dirs = []
    for sp in {sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]}:
        dirs += glob.glob(os.path.join(sp, "nvidia", "*", "include"))
        dirs += glob.glob(os.path.join(sp, "nvidia", "*", "*", "include"))
    return sorted({d for d in dirs if os.path.isdir(d)})


def default_arch_list(torch) -> str:
    """Archs the installed torch was compiled for (read from the binary, no GPU probe)."""
    try:
        flags = torch._C._cuda_getArchFlags().split()
    except Exception:
        flags = []
    archs = []
    for f in flags:
        if f.startswith("sm_"):
            num = f[3:].rstrip("a")
            if num.isdigit() and int(num) >= 75:
                archs.append(f"{num[:-1]}.{num[-1]}")
    if not archs:
        archs = ["8.0", "9.0"]
    archs = sorted(set(archs), key=float)
    archs[-1] += "+PTX"
    return ";".join(archs)


def extension_modules():
    force_cpu = os.environ.get("HOTSPOT_ERC_FORCE_CPU", "0") not in ("", "0")
    cpp_sources = sorted(glob.glob(os.path.join("csrc", "**", "*.cpp"), recursive=True))
    cu_sources = sorted(glob.glob(os.path.join("csrc", "**", "*.cu"), recursive=True))
    info = {"torch_version": None, "cuda_built": False, "cuda_reason": "", "cuda_home": None}
    try:
        import torch
    except ImportError:
        _log("torch is not importable at build time: skipping the compiled extension "
             "(install torch first and use --no-build-isolation)")
        return [], {}, info
    info["torch_version"] = torch.__version__
    cuda_home = None
    if force_cpu:
        info["cuda_reason"] = "HOTSPOT_ERC_FORCE_CPU=1 was set at build time"
    elif not torch.cuda._is_compiled():
        info["cuda_reason"] = "the installed torch is a CPU-only build"
    else:
        cuda_home = find_cuda_home()
        if cuda_home is None:
            info["cuda_reason"] = "no CUDA toolkit (nvcc + cuda_runtime.h) was found at build time"
        else:
            os.environ["CUDA_HOME"] = cuda_home
    # cpp_extension reads CUDA_HOME when first imported, so import it only now.
    from torch.utils import cpp_extension

    # No -std flag: torch.utils.cpp_extension picks the standard the installed torch needs.
    extra_cxx = ["-O3", "-fopenmp"]
    include_dirs = [os.path.join(ROOT, "csrc")]
    define_macros = [("Py_LIMITED_API", "0x030A0000")]
    with_cuda = cuda_home is not None and bool(cu_sources)
    if cuda_home is not None and not cu_sources:
        info["cuda_reason"] = "no CUDA sources in csrc/"
    if with_cuda:
        cpp_extension.CUDA_HOME = cuda_home
        include_dirs += pip_nvidia_include_dirs()
        if not os.environ.get("TORCH_CUDA_ARCH_LIST"):
            os.environ["TORCH_CUDA_ARCH_LIST"] = default_arch_list(torch)
        _log(f"CUDA build: CUDA_HOME={cuda_home} TORCH_CUDA_ARCH_LIST={os.environ['TORCH_CUDA_ARCH_LIST']}")
        define_macros.append(("HOTSPOT_ERC_WITH_CUDA", "1"))
        ext = cpp_extension.CUDAExtension(
            "hotspot_erc._C",
            cpp_sources + cu_sources,
            include_dirs=include_dirs,
            define_macros=define_macros,
            extra_compile_args={"cxx": extra_cxx, "nvcc": ["-O3", "--expt-relaxed-constexpr", "-lineinfo"]},
            extra_link_args=["-fopenmp"],
            py_limited_api=True,
        )
        info["cuda_built"] = True
        info["cuda_home"] = cuda_home
        info["cuda_arch_list"] = os.environ["TORCH_CUDA_ARCH_LIST"]
    else:
        _log(f"C++-only build ({info['cuda_reason'] or 'no CUDA'})")
        ext = cpp_extension.CppExtension(
            "hotspot_erc._C",
            cpp_sources,
            include_dirs=include_dirs,
            define_macros=define_macros,
            extra_compile_args={"cxx": extra_cxx},
            extra_link_args=["-fopenmp"],
            py_limited_api=True,
        )
    build_ext = _tolerant_build_ext(cpp_extension.BuildExtension)
    return [ext], {"build_ext": build_ext}, info


def _tolerant_build_ext(base):
    class TolerantBuildExt(base.with_options(use_ninja=shutil.which("ninja") is not None)):
        """Never fail the install because the extension could not be compiled."""

        def run(self):
            try:
                super().run()
            except Exception as exc:  # compiler missing, nvcc broken, ...
                _log(f"WARNING: building hotspot_erc._C failed ({exc}); the package installs "
                     "without it. Run `python -m hotspot_erc.info` for details.")
                _write_build_info({**BUILD_INFO, "build_error": str(exc)[-2000:]})

    return TolerantBuildExt


def _write_build_info(info: dict) -> None:
    path = os.path.join(ROOT, "hotspot_erc", "_build_info.json")
    with open(path, "w") as fh:
        json.dump(info, fh, indent=1)


EXT_MODULES, CMDCLASS, BUILD_INFO = extension_modules()
_write_build_info(BUILD_INFO)

setup(
    ext_modules=EXT_MODULES,
    cmdclass=CMDCLASS,
    package_dir={"hotspot_erc": "hotspot_erc", "hotspot_erc.kernels": "kernels"},
    packages=[
        "hotspot_erc",
        "hotspot_erc.kernels",
        "hotspot_erc.ops",
        "hotspot_erc.ops.cpu",
        "hotspot_erc.reference",
        "hotspot_erc.nn",
        "hotspot_erc.hotspots",
        "hotspot_erc.data",
        "hotspot_erc.train",
        "hotspot_erc.text",
        "hotspot_erc.inspect",
    ],
    # The report's style sheet and script, written into every report page.
    package_data={"hotspot_erc": ["_build_info.json"], "hotspot_erc.inspect": ["report.css", "report.js"]},
)
