#include "api/tokenizer_codec.h"

namespace citadel::api {

namespace {

class TokDecoder : public StreamDecoder {
 public:
  explicit TokDecoder(std::shared_ptr<const Tokenizer> tok) : tok_(std::move(tok)), dec_(*tok_, true) {}
  std::string push(int32_t id) override { return dec_.push(id); }
  std::string flush() override { return dec_.flush(); }

 private:
  std::shared_ptr<const Tokenizer> tok_;  // outlives dec_ (declared first)
  IncrementalDecoder dec_;
};

class TokenizerCodec : public TextCodec {
 public:
  explicit TokenizerCodec(std::shared_ptr<const Tokenizer> tok) : tok_(std::move(tok)) {
    for (int32_t id = 0; id < tok_->n_vocab(); ++id)
      if (tok_->is_eog(id)) eog_.push_back(id);
  }
  std::vector<int32_t> encode(std::string_view text, bool add_special, bool parse_special) const override {
    return tok_->encode(text, add_special, parse_special);
  }
  std::unique_ptr<StreamDecoder> decoder() const override { return std::make_unique<TokDecoder>(tok_); }
  std::string piece(int32_t id) const override { return tok_->token_to_piece(id); }
  std::vector<int32_t> eog_ids() const override { return eog_; }
  int32_t n_vocab() const override { return tok_->n_vocab(); }
  std::string bos_text() const override { return tok_->bos_id() >= 0 ? tok_->token_text(tok_->bos_id()) : ""; }
  std::string eos_text() const override { return tok_->eos_id() >= 0 ? tok_->token_text(tok_->eos_id()) : ""; }

 private:
  std::shared_ptr<const Tokenizer> tok_;
  std::vector<int32_t> eog_;
};

}  // namespace

std::unique_ptr<TextCodec> make_tokenizer_codec(std::shared_ptr<const Tokenizer> tok) {
  return std::make_unique<TokenizerCodec>(std::move(tok));
}

}  // namespace citadel::api
