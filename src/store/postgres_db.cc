#include "store/database.h"

namespace citadel::store {

Result<std::unique_ptr<Database>> open_postgres(const std::string& conninfo) {
  return Unsupported("postgres: backend not built yet");
}

}  // namespace citadel::store
