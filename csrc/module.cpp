// Python entry point of hotspot_erc._C. The ops themselves register with the dispatcher through
// TORCH_LIBRARY when this shared object is loaded; the module only carries build facts that
// `hotspot_erc.info` reports (so a stale build can name the torch it was compiled against).
#include <Python.h>
#include <torch/version.h>

#define HOTSPOT_STR2(x) #x
#define HOTSPOT_STR(x) HOTSPOT_STR2(x)

extern "C" {
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT,
      "_C",  // name
      "hotspot-erc compiled ops (registered in torch.ops.hotspot_erc)",
      -1,
      nullptr,
  };
  PyObject* m = PyModule_Create(&module_def);
  if (m == nullptr) return nullptr;
  PyModule_AddStringConstant(m, "torch_version", TORCH_VERSION);
#ifdef HOTSPOT_ERC_WITH_CUDA
  PyModule_AddIntConstant(m, "with_cuda", 1);
#else
  PyModule_AddIntConstant(m, "with_cuda", 0);
#endif
  return m;
}
}
