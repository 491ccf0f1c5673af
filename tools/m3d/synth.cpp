// m3d synth: synthetic CT studies with ground truth in the M3D-Data layouts; m3d synth check.
#include <cstdio>

#include "commands.h"
#include "data/synth.h"
#include "m3d/error.h"

namespace m3d::cli {

void add_synth(CLI::App& app) {
  auto o = std::make_shared<data::SynthOptions>();
  CLI::App* cmd = app.add_subcommand("synth", "Generate synthetic CT studies with reports, VQA and masks (M3D-Data layouts); `synth check DIR` verifies one");
  cmd->add_option("--n", o->count, "Number of studies")->capture_default_str();
  cmd->add_option("-o,--out", o->output, "Output folder (M3D_Cap_npy/, M3D-VQA/)");
  cmd->add_option("--seed", o->seed, "Same seed, same bytes")->capture_default_str();
  cmd->add_option("-j,--jobs", o->threads, "Studies generated in parallel (default: all cores)");
  cmd->add_option("--regions", o->regions, "Scan regions to draw from: chest, abdomen, chest-abdomen-pelvis (default: all)")->delimiter(',');
  cmd->add_flag("--nifti", o->nifti, "Also write ct.nii.gz (HU) and the label maps as NIfTI with their spacing");
  auto dir = std::make_shared<std::string>();
  CLI::App* check = cmd->add_subcommand("check", "Check a generated set: reports, masks, boxes and VQA agree with the truth");
  check->add_option("dir", *dir, "The folder m3d synth wrote")->required();
  check->callback([dir] {
    const auto problems = data::synth_check(*dir);
    for (const auto& p : problems) std::printf("%s\n", p.c_str());
    if (!problems.empty()) fail("{}: {} problems", *dir, problems.size());
    std::printf("%s: consistent\n", dir->c_str());
  });
  cmd->callback([o, cmd] {
    if (cmd->got_subcommand("check")) return;
    if (o->output.empty()) fail("m3d synth: give the output folder with -o (or: m3d synth check DIR)");
    data::synth_write(*o);
    std::printf("%s: %lld studies\n", o->output.c_str(), static_cast<long long>(o->count));
  });
}

}  // namespace m3d::cli
