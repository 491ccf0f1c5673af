// The random choices of the data side: one generator per (seed, purpose, epoch,
// sample), so training and evaluation draw the same whatever the number of ranks and
// loader threads, and a resumed run draws what an uninterrupted one would.
#pragma once

#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "text/tokenizer.h"

namespace m3d::data {

// A generator for one (purpose, epoch, index). Purposes in use: 0 epoch order, 1 CLIP
// training augmentation and report cuts, 2 report cuts for retrieval evaluation, 3 LaMed
// samples, 4 the report prompt drawn per bench sample (Med3DVLM's eval_caption.py).
std::mt19937_64 sample_rng(uint64_t seed, uint64_t purpose, uint64_t epoch, uint64_t index);

// text::report_truncate with the generator of sample `index` under `seed` (purpose 2):
// what M3D-CLIP's evaluation (eval_itr.py seeds 42) and m3d's retrieval eval feed the text tower.
std::string report_truncate_seeded(const std::string& report, const text::Tokenizer& tokenizer, int64_t max_tokens, uint64_t seed, int64_t index);

// The report prompts (Caption_templates of M3D's and Med3DVLM's prompt_templates.py): the
// phrasings quoted in m3d_lamed_spec.md §12, a subset of the official 42.
const std::vector<std::string>& caption_templates();

}  // namespace m3d::data
