// DeviceComm implementations (device_comm.h): host-staged through a host Communicator, and NCCL.
#include "runtime/device_comm.h"

#include <cuda_runtime_api.h>

#include <string>
#include <vector>

#include "runtime/nccl_group.h"

namespace citadel::runtime {

namespace {

Status cuda_error(const char* what, cudaError_t e) {
  return Internal(std::string("device comm: ") + what + ": " + cudaGetErrorString(e));
}

class HostStagedComm final : public DeviceComm {
 public:
  explicit HostStagedComm(Communicator* host) : host_(host) {}
  int rank() const override { return host_->rank(); }
  int size() const override { return host_->size(); }
  bool capturable() const override { return false; }
  Status all_reduce_sum_f32(float* data, int64_t n, void* stream) override {
    if (n < 0) return InvalidArgument("device comm: negative element count");
    auto s = static_cast<cudaStream_t>(stream);
    buf_.resize(static_cast<size_t>(n));
    const size_t bytes = static_cast<size_t>(n) * sizeof(float);
    if (cudaError_t e = cudaMemcpyAsync(buf_.data(), data, bytes, cudaMemcpyDeviceToHost, s); e != cudaSuccess)
      return cuda_error("copy to host", e);
    if (cudaError_t e = cudaStreamSynchronize(s); e != cudaSuccess) return cuda_error("synchronize", e);
    RETURN_IF_ERROR(host_->all_reduce_sum(buf_.data(), n));
    if (cudaError_t e = cudaMemcpyAsync(data, buf_.data(), bytes, cudaMemcpyHostToDevice, s); e != cudaSuccess)
      return cuda_error("copy to device", e);
    // buf_ is pageable: the copy has been staged when cudaMemcpyAsync returns, so buf_ may change afterwards.
    return OkStatus();
  }
  Status all_gather_f32(const float* mine, int64_t n, float* all, void* stream) override {
    if (n < 0) return InvalidArgument("device comm: negative element count");
    auto s = static_cast<cudaStream_t>(stream);
    buf_.resize(static_cast<size_t>(n));
    gathered_.resize(static_cast<size_t>(n * size()));
    if (cudaError_t e = cudaMemcpyAsync(buf_.data(), mine, static_cast<size_t>(n) * sizeof(float),
                                        cudaMemcpyDeviceToHost, s); e != cudaSuccess)
      return cuda_error("copy to host", e);
    if (cudaError_t e = cudaStreamSynchronize(s); e != cudaSuccess) return cuda_error("synchronize", e);
    RETURN_IF_ERROR(host_->all_gather(buf_.data(), n, gathered_.data()));
    if (cudaError_t e = cudaMemcpyAsync(all, gathered_.data(), gathered_.size() * sizeof(float),
                                        cudaMemcpyHostToDevice, s); e != cudaSuccess)
      return cuda_error("copy to device", e);
    return OkStatus();
  }

 private:
  Communicator* host_;
  std::vector<float> buf_, gathered_;
};

class NcclDeviceComm final : public DeviceComm {
 public:
  NcclDeviceComm(NcclGroup* g, int r) : g_(g), r_(r) {}
  int rank() const override { return r_; }
  int size() const override { return g_->size(); }
  bool capturable() const override { return true; }
  Status all_reduce_sum_f32(float* data, int64_t n, void* stream) override {
    return g_->all_reduce_sum(r_, data, n, NcclType::kF32, static_cast<cudaStream_t>(stream));
  }
  Status all_gather_f32(const float* mine, int64_t n, float* all, void* stream) override {
    return g_->all_gather(r_, mine, all, n, NcclType::kF32, static_cast<cudaStream_t>(stream));
  }

 private:
  NcclGroup* g_;
  int r_;
};

}  // namespace

std::unique_ptr<DeviceComm> host_staged_comm(Communicator* host) { return std::make_unique<HostStagedComm>(host); }

std::unique_ptr<DeviceComm> nccl_device_comm(NcclGroup* group, int r) {
  return std::make_unique<NcclDeviceComm>(group, r);
}

}  // namespace citadel::runtime
