// DeviceComm implementations (device_comm.h): host-staged through a host Communicator, NCCL, and peer memory.
#include "runtime/device_comm.h"

#include <cuda_runtime_api.h>

#include <string>
#include <vector>

#include "runtime/nccl_group.h"
#include "runtime/peer_all_reduce.h"

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
  void abort() override {}
  bool aborted() const override { return false; }
  Status all_reduce_sum_f32(float* data, int64_t n, void* stream) override {
    const auto s = static_cast<cudaStream_t>(stream);
    RETURN_IF_ERROR(to_host(data, n, &buf_, s));
    RETURN_IF_ERROR(host_->all_reduce_sum(buf_.data(), n));
    return to_device(buf_, data, s);
  }
  Status all_gather_f32(const float* mine, int64_t n, float* all, void* stream) override {
    const auto s = static_cast<cudaStream_t>(stream);
    RETURN_IF_ERROR(to_host(mine, n, &buf_, s));
    gathered_.resize(static_cast<size_t>(n * size()));
    RETURN_IF_ERROR(host_->all_gather(buf_.data(), n, gathered_.data()));
    return to_device(gathered_, all, s);
  }

 private:
  // host = dev[0..n), once the stream's earlier work is done (the stream is synchronised).
  static Status to_host(const float* dev, int64_t n, std::vector<float>* host, cudaStream_t s) {
    if (n < 0) return InvalidArgument("device comm: negative element count");
    host->resize(static_cast<size_t>(n));
    if (cudaError_t e = cudaMemcpyAsync(host->data(), dev, host->size() * sizeof(float), cudaMemcpyDeviceToHost, s);
        e != cudaSuccess)
      return cuda_error("copy to host", e);
    if (cudaError_t e = cudaStreamSynchronize(s); e != cudaSuccess) return cuda_error("synchronize", e);
    return OkStatus();
  }
  // dev[0..host.size()) = host, queued on the stream. host is pageable: the copy has been staged when
  // cudaMemcpyAsync returns, so host may change afterwards.
  static Status to_device(const std::vector<float>& host, float* dev, cudaStream_t s) {
    if (cudaError_t e = cudaMemcpyAsync(dev, host.data(), host.size() * sizeof(float), cudaMemcpyHostToDevice, s);
        e != cudaSuccess)
      return cuda_error("copy to device", e);
    return OkStatus();
  }

  Communicator* host_;
  std::vector<float> buf_, gathered_;
};

class NcclDeviceComm final : public DeviceComm {
 public:
  NcclDeviceComm(NcclGroup* g, int r) : g_(g), r_(r) {}
  int rank() const override { return r_; }
  int size() const override { return g_->size(); }
  bool capturable() const override { return true; }
  void abort() override { g_->abort(); }
  bool aborted() const override { return g_->aborted(); }
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

class PeerDeviceComm final : public DeviceComm {
 public:
  PeerDeviceComm(PeerAllReduce* g, int r, std::unique_ptr<DeviceComm> larger)
      : g_(g), r_(r), larger_(std::move(larger)) {}
  int rank() const override { return r_; }
  int size() const override { return g_->size(); }
  bool capturable() const override { return !larger_ || larger_->capturable(); }
  void abort() override {
    g_->abort();
    if (larger_) larger_->abort();
  }
  bool aborted() const override { return g_->aborted(); }
  Status all_reduce_sum_f32(float* data, int64_t n, void* stream) override {
    if (n > g_->max_elems() && larger_) return larger_->all_reduce_sum_f32(data, n, stream);
    return g_->all_reduce_sum(r_, data, n, static_cast<cudaStream_t>(stream));
  }
  Status all_gather_f32(const float* mine, int64_t n, float* all, void* stream) override {
    if (n > g_->max_elems() && larger_) return larger_->all_gather_f32(mine, n, all, stream);
    return g_->all_gather(r_, mine, n, all, static_cast<cudaStream_t>(stream));
  }

 private:
  PeerAllReduce* g_;
  int r_;
  std::unique_ptr<DeviceComm> larger_;
};

}  // namespace

std::unique_ptr<DeviceComm> host_staged_comm(Communicator* host) { return std::make_unique<HostStagedComm>(host); }

std::unique_ptr<DeviceComm> nccl_device_comm(NcclGroup* group, int r) {
  return std::make_unique<NcclDeviceComm>(group, r);
}

std::unique_ptr<DeviceComm> peer_device_comm(PeerAllReduce* group, int r, std::unique_ptr<DeviceComm> larger) {
  return std::make_unique<PeerDeviceComm>(group, r, std::move(larger));
}

}  // namespace citadel::runtime
