// See distributed.h.
#ifndef USE_C10D_GLOO
#define USE_C10D_GLOO
#endif
#include "train/distributed.h"

#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>

#include <chrono>
#include <cstdlib>

#include "m3d/error.h"

namespace m3d::train {
namespace {

int env_int(const char* name, int fallback) {
  const char* value = std::getenv(name);
  if (value == nullptr || *value == '\0') return fallback;
  char* end = nullptr;
  const long parsed = std::strtol(value, &end, 10);
  if (*end != '\0' || parsed < 0 || parsed > 1'000'000) fail("distributed: {}='{}' is not a valid number", name, value);
  return static_cast<int>(parsed);
}

}  // namespace

DistEnv DistEnv::from_environment() {
  DistEnv env;
  env.world_size = env_int("WORLD_SIZE", 1);
  env.rank = env_int("RANK", 0);
  env.local_rank = env_int("LOCAL_RANK", env.rank);
  if (const char* addr = std::getenv("MASTER_ADDR"); addr != nullptr && *addr) env.master_addr = addr;
  env.master_port = env_int("MASTER_PORT", 29500);
  if (env.world_size < 1) fail("distributed: WORLD_SIZE must be at least 1");
  if (env.rank >= env.world_size) fail("distributed: RANK {} is not below WORLD_SIZE {}", env.rank, env.world_size);
  if (env.master_port < 1 || env.master_port > 65535) fail("distributed: MASTER_PORT {} is not a TCP port", env.master_port);
  return env;
}

struct Communicator::Impl {
  c10::intrusive_ptr<c10d::Store> store;
  c10::intrusive_ptr<c10d::ProcessGroupGloo> group;
};

Communicator::Communicator(const DistEnv& env, double timeout_s) : impl_(std::make_unique<Impl>()), env_(env) {
  try {
    c10d::TCPStoreOptions options;
    options.port = static_cast<uint16_t>(env.master_port);
    options.isServer = env.rank == 0;
    options.numWorkers = static_cast<size_t>(env.world_size);
    options.timeout = std::chrono::milliseconds(static_cast<int64_t>(timeout_s * 1000));
    impl_->store = c10::make_intrusive<c10d::TCPStore>(env.master_addr, options);
    auto gloo = c10d::ProcessGroupGloo::Options::create();
    gloo->timeout = options.timeout;
    gloo->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(env.master_addr));
    impl_->group = c10::make_intrusive<c10d::ProcessGroupGloo>(impl_->store, env.rank, env.world_size, gloo);
  } catch (const std::exception& e) {
    fail("distributed: rank {} of {} could not join the group at {}:{}: {}", env.rank, env.world_size, env.master_addr,
         env.master_port, std::string(e.what()).substr(0, 300));
  }
}

Communicator::~Communicator() = default;

void Communicator::all_reduce_sum(const std::vector<torch::Tensor>& tensors, double bucket_mb) {
  if (env_.world_size == 1 || tensors.empty()) return;
  const auto bucket_bytes = static_cast<int64_t>(bucket_mb * 1024 * 1024);
  size_t start = 0;
  while (start < tensors.size()) {
    size_t end = start;
    int64_t bytes = 0;
    while (end < tensors.size() && (end == start || bytes + tensors[end].nbytes() <= bucket_bytes) &&
           tensors[end].scalar_type() == tensors[start].scalar_type()) {
      bytes += static_cast<int64_t>(tensors[end].nbytes());
      ++end;
    }
    std::vector<torch::Tensor> flat_parts;
    for (size_t i = start; i < end; ++i) flat_parts.push_back(tensors[i].detach().to(torch::kCPU).reshape(-1));
    std::vector<at::Tensor> buffer = {torch::cat(flat_parts)};
    impl_->group->allreduce(buffer)->wait();
    int64_t offset = 0;
    for (size_t i = start; i < end; ++i) {
      const int64_t n = tensors[i].numel();
      torch::NoGradGuard no_grad;
      tensors[i].copy_(buffer[0].slice(0, offset, offset + n).view(tensors[i].sizes()));
      offset += n;
    }
    start = end;
  }
}

torch::Tensor Communicator::all_gather(const torch::Tensor& local) {
  if (env_.world_size == 1) return local.detach().clone();
  const auto host = local.detach().to(torch::kCPU).contiguous();
  std::vector<std::vector<at::Tensor>> outputs(1);
  for (int r = 0; r < env_.world_size; ++r) outputs[0].push_back(torch::empty_like(host));
  std::vector<at::Tensor> inputs = {host};
  impl_->group->allgather(outputs, inputs)->wait();
  return torch::cat(outputs[0], 0).to(local.device());
}

void Communicator::broadcast(torch::Tensor& tensor, int root) {
  if (env_.world_size == 1) return;
  std::vector<at::Tensor> buffer = {tensor.detach().to(torch::kCPU).contiguous()};
  c10d::BroadcastOptions options;
  options.rootRank = root;
  impl_->group->broadcast(buffer, options)->wait();
  torch::NoGradGuard no_grad;
  tensor.copy_(buffer[0]);
}

void Communicator::barrier() {
  if (env_.world_size > 1) impl_->group->barrier()->wait();
}

}  // namespace m3d::train
