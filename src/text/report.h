// Report texts cut to a token budget as M3D's data code cuts them.
#pragma once

#include <cstdint>
#include <random>
#include <string>

#include "text/tokenizer.h"

namespace m3d::text {

// ITRDataset.truncate_text (M3D-CLIP's dataset, also eval_itr.py): a report over
// `max_tokens` keeps its first sentence, then sentences drawn at random while their
// token counts fit (the first's not counted); '.'-joined. Shorter reports are returned unchanged.
std::string report_truncate(const std::string& report, const Tokenizer& tokenizer, int64_t max_tokens, std::mt19937_64& rng);

}  // namespace m3d::text
