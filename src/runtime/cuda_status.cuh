// CUDA errors as Status, for runtime code (CUDA-only header). A device can fail for reasons no caller controls (out
// of memory, an ECC error, a kernel fault), so runtime code that returns Status reports them instead of aborting;
// CUDA_CHECK (base/check.h) stays for what can only be a programming error.
//   cudaErrorMemoryAllocation -> kResourceExhausted; anything else -> kInternal; the message names the call, the
//   file:line and cudaGetErrorName / cudaGetErrorString.
// Sticky errors (cuda_error_is_sticky) leave the CUDA context unusable: every later call in the process returns them,
// so the runner that meets one fails for good (cuda_runner.h).
#pragma once

#include <cuda_runtime.h>

#include <string>

#include "base/status.h"

namespace citadel::runtime {

inline bool cuda_error_is_sticky(cudaError_t e) {
  switch (e) {
    case cudaErrorIllegalAddress:
    case cudaErrorLaunchFailure:
    case cudaErrorHardwareStackError:
    case cudaErrorIllegalInstruction:
    case cudaErrorMisalignedAddress:
    case cudaErrorInvalidAddressSpace:
    case cudaErrorInvalidPc:
    case cudaErrorAssert:
    case cudaErrorLaunchTimeout:
    case cudaErrorECCUncorrectable:
    case cudaErrorUnknown:
      return true;
    default:
      return false;
  }
}

inline Status cuda_status(cudaError_t e, const char* call, const char* file, int line) {
  if (e == cudaSuccess) return OkStatus();
  if (!cuda_error_is_sticky(e)) cudaGetLastError();  // clear a non-sticky error so later calls do not see it
  std::string msg = std::string("cuda: ") + call + " failed at " + file + ":" + std::to_string(line) + ": " +
                    cudaGetErrorName(e) + " (" + cudaGetErrorString(e) + ")";
  if (e == cudaErrorMemoryAllocation) return ResourceExhausted(std::move(msg));
  if (cuda_error_is_sticky(e)) msg += " [sticky: the device context is unusable]";
  return Internal(std::move(msg));
}

// Makes `device` the calling thread's current CUDA device for the scope and restores the previous one (the current
// device is per thread: an engine thread or a loader thread serving models on several cards). Errors here would be
// device faults the next call reports, so they are not checked.
class ScopedCudaDevice {
 public:
  explicit ScopedCudaDevice(int device) {
    int current = -1;
    if (cudaGetDevice(&current) != cudaSuccess) {
      cudaGetLastError();
      return;
    }
    if (current == device) return;
    previous_ = current;
    cudaSetDevice(device);
  }
  ~ScopedCudaDevice() {
    if (previous_ >= 0) cudaSetDevice(previous_);
  }
  ScopedCudaDevice(const ScopedCudaDevice&) = delete;
  ScopedCudaDevice& operator=(const ScopedCudaDevice&) = delete;

 private:
  int previous_ = -1;
};

}  // namespace citadel::runtime

// Returns the Status of a failed CUDA runtime call from the enclosing function (which returns Status).
#define CUDA_TRY(expr)                                                                                   \
  do {                                                                                                   \
    const cudaError_t cuda_try_e_ = (expr);                                                              \
    if (cuda_try_e_ != cudaSuccess) return ::citadel::runtime::cuda_status(cuda_try_e_, #expr, __FILE__, \
                                                                           __LINE__);                    \
  } while (0)
