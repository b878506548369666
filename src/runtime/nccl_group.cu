#include "runtime/nccl_group.h"

#include <dlfcn.h>

#include <cstdlib>

namespace citadel::runtime {

// NCCL's C API as this file uses it (nccl.h: ncclComm_t is a pointer, ncclResult_t / ncclDataType_t / ncclRedOp_t
// are int enums; ncclSum 0, ncclFloat32 7, ncclBfloat16 9).
struct NcclGroup::Api {
  int (*get_version)(int*) = nullptr;
  int (*comm_init_all)(void**, int, const int*) = nullptr;
  int (*comm_destroy)(void*) = nullptr;
  int (*comm_abort)(void*) = nullptr;
  const char* (*error_string)(int) = nullptr;
  int (*all_reduce)(const void*, void*, size_t, int, int, void*, cudaStream_t) = nullptr;
  int (*all_gather)(const void*, void*, size_t, int, void*, cudaStream_t) = nullptr;
  void* lib = nullptr;
  ~Api() {
    if (lib) dlclose(lib);
  }
};

namespace {

int nccl_type(NcclType t) { return t == NcclType::kF32 ? 7 : 9; }

}  // namespace

Result<std::unique_ptr<NcclGroup>> NcclGroup::create(const std::vector<int>& devices) {
  if (devices.empty()) return InvalidArgument("nccl: no devices");
  setenv("NCCL_NVLS_ENABLE", "0", /*overwrite=*/0);  // NVLink multicast off unless the environment says otherwise
  auto api = std::make_shared<Api>();
  std::vector<std::string> paths;
  if (const char* p = std::getenv("CITADEL_NCCL_LIB")) paths.push_back(p);
  paths.push_back("libnccl.so.2");
  std::string tried;
  for (const std::string& p : paths) {
    api->lib = dlopen(p.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (api->lib) break;
    tried += (tried.empty() ? "" : ", ") + p;
  }
  if (!api->lib) return Unsupported("nccl: cannot load NCCL (tried " + tried + "; set CITADEL_NCCL_LIB)");
  auto sym = [&](const char* name, auto* fn) {
    *reinterpret_cast<void**>(fn) = dlsym(api->lib, name);
    return *reinterpret_cast<void**>(fn) != nullptr;
  };
  if (!sym("ncclGetVersion", &api->get_version) || !sym("ncclCommInitAll", &api->comm_init_all) ||
      !sym("ncclCommDestroy", &api->comm_destroy) || !sym("ncclCommAbort", &api->comm_abort) ||
      !sym("ncclGetErrorString", &api->error_string) ||
      !sym("ncclAllReduce", &api->all_reduce) || !sym("ncclAllGather", &api->all_gather)) {
    return Unsupported("nccl: the loaded library lacks an entry point this build uses");
  }
  std::unique_ptr<NcclGroup> g(new NcclGroup);
  g->api_ = api;
  if (int rc = api->get_version(&g->version_); rc != 0) return Internal(std::string("nccl: ") + api->error_string(rc));
  g->comms_.assign(devices.size(), nullptr);
  if (int rc = api->comm_init_all(g->comms_.data(), static_cast<int>(devices.size()), devices.data()); rc != 0) {
    g->comms_.clear();
    return Internal(std::string("nccl: ncclCommInitAll: ") + api->error_string(rc));
  }
  return Result<std::unique_ptr<NcclGroup>>(std::move(g));
}

NcclGroup::~NcclGroup() {
  if (aborted_) return;  // ncclCommAbort freed them
  for (void* c : comms_) {
    if (c) api_->comm_destroy(c);
  }
}

void NcclGroup::abort() {
  if (aborted_.exchange(true)) return;
  for (void* c : comms_) {
    if (c) api_->comm_abort(c);
  }
}

namespace {
Status nccl_aborted() { return Cancelled("nccl: the tensor-parallel group was aborted (a rank failed)"); }
}  // namespace

Status NcclGroup::all_reduce_sum(int r, void* buf, int64_t count, NcclType t, cudaStream_t s) {
  if (r < 0 || r >= size()) return InvalidArgument("nccl: no rank " + std::to_string(r));
  if (aborted_) return nccl_aborted();
  const int rc = api_->all_reduce(buf, buf, static_cast<size_t>(count), nccl_type(t), /*ncclSum=*/0, comms_[r], s);
  return rc == 0 ? OkStatus() : Internal(std::string("nccl: ncclAllReduce: ") + api_->error_string(rc));
}

Status NcclGroup::all_gather(int r, const void* in, void* out, int64_t count, NcclType t, cudaStream_t s) {
  if (r < 0 || r >= size()) return InvalidArgument("nccl: no rank " + std::to_string(r));
  if (aborted_) return nccl_aborted();
  const int rc = api_->all_gather(in, out, static_cast<size_t>(count), nccl_type(t), comms_[r], s);
  return rc == 0 ? OkStatus() : Internal(std::string("nccl: ncclAllGather: ") + api_->error_string(rc));
}

}  // namespace citadel::runtime
