// TextCodec over the project's Tokenizer (src/tokenizer): what served GGUF models use.
#pragma once

#include <memory>

#include "api/model_host.h"
#include "tokenizer/tokenizer.h"

namespace citadel::api {

// The codec shares ownership of the tokenizer.
std::unique_ptr<TextCodec> make_tokenizer_codec(std::shared_ptr<const Tokenizer> tok);

}  // namespace citadel::api
