// See distributed.h.
#ifndef USE_C10D_GLOO
#define USE_C10D_GLOO
#endif
#include "train/distributed.h"

#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/autograd/function.h>
#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/variable.h>
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
    fail("distributed: rank {} of {} could not join the group at {}:{}: {}", env.rank, env.world_size, env.master_addr, env.master_port,
         std::string(e.what()).substr(0, 300));
  }
}

Communicator::~Communicator() = default;

namespace {

// Consecutive runs of `tensors` of one dtype and at most ~bucket_mb each: [start, end) pairs.
std::vector<std::pair<size_t, size_t>> plan_buckets(const std::vector<torch::Tensor>& tensors, double bucket_mb) {
  const auto bucket_bytes = static_cast<int64_t>(bucket_mb * 1024 * 1024);
  std::vector<std::pair<size_t, size_t>> buckets;
  size_t start = 0;
  while (start < tensors.size()) {
    size_t end = start;
    int64_t bytes = 0;
    while (end < tensors.size() && (end == start || bytes + static_cast<int64_t>(tensors[end].nbytes()) <= bucket_bytes) &&
           tensors[end].scalar_type() == tensors[start].scalar_type()) {
      bytes += static_cast<int64_t>(tensors[end].nbytes());
      ++end;
    }
    buckets.emplace_back(start, end);
    start = end;
  }
  return buckets;
}

// The tensors packed into one flat host buffer.
at::Tensor pack(const std::vector<torch::Tensor>& tensors) {
  std::vector<torch::Tensor> flat_parts;
  for (const auto& t : tensors) flat_parts.push_back(t.detach().to(torch::kCPU).reshape(-1));
  return torch::cat(flat_parts);
}

// The buffer's pieces copied back into the tensors.
void unpack(const at::Tensor& buffer, const std::vector<torch::Tensor>& tensors) {
  torch::NoGradGuard no_grad;
  int64_t offset = 0;
  for (const auto& t : tensors) {
    const int64_t n = t.numel();
    t.copy_(buffer.slice(0, offset, offset + n).view(t.sizes()));
    offset += n;
  }
}

}  // namespace

void Communicator::all_reduce_sum(const std::vector<torch::Tensor>& tensors, double bucket_mb) {
  if (env_.world_size == 1 || tensors.empty()) return;
  for (const auto& [start, end] : plan_buckets(tensors, bucket_mb)) {
    const std::vector<torch::Tensor> part(tensors.begin() + static_cast<std::ptrdiff_t>(start), tensors.begin() + static_cast<std::ptrdiff_t>(end));
    std::vector<at::Tensor> buffer = {pack(part)};
    impl_->group->allreduce(buffer)->wait();
    unpack(buffer[0], part);
  }
}

using GradAccumulator = decltype(torch::autograd::impl::grad_accumulator(std::declval<const torch::Tensor&>()));

struct OverlappedGradientSum::State {
  Communicator* comm = nullptr;
  std::vector<torch::Tensor> parameters;  // reverse registration order
  std::vector<std::pair<size_t, size_t>> buckets;
  std::vector<size_t> bucket_of;  // per parameter
  std::vector<GradAccumulator> accumulators;
  std::vector<uintptr_t> hook_keys;
  bool armed = false, learned = false;
  std::vector<bool> ready, expected;  // expected: got a gradient in the first summed backward
  std::vector<bool> bucket_sent;
  std::vector<size_t> waiting;  // per bucket: parameters not ready yet
  size_t next = 0;  // the next bucket to send
  struct Sent {
    std::vector<at::Tensor> buffer;
    std::vector<torch::Tensor> grads;
    c10::intrusive_ptr<c10d::Work> work;
  };
  std::vector<Sent> sent;

  void send(size_t b) {
    Sent s;
    for (size_t i = buckets[b].first; i < buckets[b].second; ++i) {
      if (parameters[i].grad().defined()) s.grads.push_back(parameters[i].grad());
    }
    if (!s.grads.empty()) {
      s.buffer = {pack(s.grads)};
      s.work = comm->impl_->group->allreduce(s.buffer);
    }
    sent.push_back(std::move(s));
  }
  // Sends, in order, every bucket whose gradients are all in.
  void send_ready() {
    while (next < buckets.size() && waiting[next] == 0) bucket_sent[next] = true, send(next++);
  }
};

namespace {

// Fires after a parameter's gradient has been accumulated into .grad.
class ReadyHook : public torch::autograd::FunctionPostHook {
 public:
  ReadyHook(std::weak_ptr<OverlappedGradientSum::State> state, size_t index) : state_(std::move(state)), index_(index) {}
  torch::autograd::variable_list operator()(const torch::autograd::variable_list& outputs, const torch::autograd::variable_list&) override {
    auto state = state_.lock();
    if (state && state->armed && !state->ready[index_]) {
      state->ready[index_] = true;
      const size_t b = state->bucket_of[index_];
      if (state->bucket_sent[b]) {
        // Only a parameter without a gradient in the first step can come after its bucket left.
        fail(
            "distributed: a parameter that got no gradient in the first step got one later (parameter {} of {} in reverse "
            "order); data-parallel training needs the same parameters used in every step",
            index_, state->parameters.size());
      }
      if (state->expected[index_]) --state->waiting[b];
      state->send_ready();
    }
    return outputs;
  }

 private:
  std::weak_ptr<OverlappedGradientSum::State> state_;
  size_t index_;
};

}  // namespace

OverlappedGradientSum::OverlappedGradientSum(Communicator& comm, const std::vector<torch::Tensor>& parameters, double bucket_mb)
    : state_(std::make_shared<State>()) {
  auto& s = *state_;
  s.comm = &comm;
  s.parameters.assign(parameters.rbegin(), parameters.rend());
  s.buckets = plan_buckets(s.parameters, bucket_mb);
  s.bucket_of.resize(s.parameters.size());
  for (size_t b = 0; b < s.buckets.size(); ++b) {
    for (size_t i = s.buckets[b].first; i < s.buckets[b].second; ++i) s.bucket_of[i] = b;
  }
  if (comm.world_size() == 1) return;
  for (size_t i = 0; i < s.parameters.size(); ++i) {
    if (!s.parameters[i].requires_grad()) fail("distributed: parameter {} does not require a gradient", i);
    auto accumulator = torch::autograd::impl::grad_accumulator(s.parameters[i]);
    if (!accumulator) fail("distributed: parameter {} is not a leaf that requires a gradient", i);
    s.hook_keys.push_back(accumulator->add_post_hook(std::make_unique<ReadyHook>(state_, i)));
    s.accumulators.push_back(std::move(accumulator));
  }
}

OverlappedGradientSum::~OverlappedGradientSum() {
  auto& s = *state_;
  for (size_t i = 0; i < s.accumulators.size(); ++i) s.accumulators[i]->del_post_hook(s.hook_keys[i]);
}

void OverlappedGradientSum::arm() {
  auto& s = *state_;
  s.armed = true;
  s.ready.assign(s.parameters.size(), false);
  s.bucket_sent.assign(s.buckets.size(), false);
  if (!s.learned) s.expected.assign(s.parameters.size(), true);
  s.waiting.assign(s.buckets.size(), 0);
  for (size_t i = 0; i < s.parameters.size(); ++i) s.waiting[s.bucket_of[i]] += s.expected[i] ? 1 : 0;
  s.next = 0;
  s.sent.clear();
  if (s.learned) s.send_ready();  // buckets of parameters that get no gradient
}

void OverlappedGradientSum::finish() {
  auto& s = *state_;
  if (s.comm->world_size() == 1) return;
  if (!s.armed) arm();  // nothing was sent during a backward: send everything now
  if (!s.learned) {  // parameters without a gradient now are not waited for in later steps
    s.expected = s.ready;
    s.learned = true;
  }
  while (s.next < s.buckets.size()) s.bucket_sent[s.next] = true, s.send(s.next++);
  for (auto& sent : s.sent) {
    if (!sent.work) continue;
    sent.work->wait();
    unpack(sent.buffer[0], sent.grads);
  }
  s.sent.clear();
  s.armed = false;
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
