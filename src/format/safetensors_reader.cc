// safetensors reader (placeholder until the full reader lands).
#include "format/tensor_store.h"

namespace citadel {

Result<std::unique_ptr<TensorStore>> open_safetensors(const std::string& path) {
  return Unsupported(path + ": safetensors reader not implemented yet");
}

}  // namespace citadel
