# The two commands: `make demo` and `make test`. Both install what is missing first.
BUILD ?= build
CAIRN := $(BUILD)/bin/cairn
DATA ?= data/kjv
RUN ?= runs/demo
DASHBOARD_PORT ?= 8265
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all deps build test demo data bench clean test-asan test-tsan soak fuzz

all: build

deps:
	$(SUDO) scripts/install-deps.sh

build: deps
	cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo
	ninja -C $(BUILD)

test: build
	cd $(BUILD) && ctest --output-on-failure -j2 --timeout 900

# The soak test (tests/soak): a 2-node elastic job through 110 seeded faults, about 30 minutes,
# as root; not part of `make test`. CAIRN_SOAK_SEED=N replays a run's fault schedule.
soak: build
	cd $(BUILD) && ctest -C soak -L soak -V --timeout 2700

# The unit tests under sanitizers, each in a build directory of its own. ASan+UBSan: every unit
# test. TSan: the modules whose threads are cairn's own (the agent, the master and its gRPC
# handlers, the persister, standbys, the dashboard server); libtorch's and OpenMP's threads are
# not instrumented, so the torch-heavy modules would only report their internals.
TSAN_TESTS := core_tests elastic_tests elastic_rpc_tests dashboard_tests ckpt_tests
# A sanitizer brings its own allocator: the tests of glibc malloc's tuning do not apply, nor
# the standby's prefault test (a standby keeps the pages glibc's heap keeps after a free). Under
# TSan a child forked from a threaded test binary cannot start threads of its own (TSan's
# limit), which the shared-memory writer-crash test's child needs. Training processes built
# with a sanitizer leave libtorch's allocator alone (a tensor's use after free must reach the
# sanitizer), so the test that installs the block cache as that allocator is left out too; the
# cache's own tests run.
SAN_FILTER := GTEST_FILTER=-MallocTuning.*:HeapInUse.*:StandbyPool.StandbyFaultsInTheHeapItIsAskedForAndKeepsIt:BlockCacheAllocator.*
TSAN_FILTER := $(SAN_FILTER):ShmSlot.SurvivesWriterCrash
test-asan: deps
	cmake -S . -B $(BUILD)-asan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCAIRN_SANITIZE=address
	ninja -C $(BUILD)-asan
	cd $(BUILD)-asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
	  LSAN_OPTIONS=suppressions=$(CURDIR)/tests/sanitizers/lsan.supp \
	  UBSAN_OPTIONS=print_stacktrace=1 $(SAN_FILTER) ctest -L unit --output-on-failure -j2 --timeout 1800

test-tsan: deps
	cmake -S . -B $(BUILD)-tsan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCAIRN_SANITIZE=thread
	ninja -C $(BUILD)-tsan $(TSAN_TESTS)
	cd $(BUILD)-tsan && TSAN_OPTIONS=halt_on_error=1:die_after_fork=0:ignore_noninstrumented_modules=1:second_deadlock_stack=1:suppressions=$(CURDIR)/tests/sanitizers/tsan.supp \
	  $(TSAN_FILTER) ctest -R '^($(subst $(eval) ,|,$(TSAN_TESTS)))$$' --output-on-failure -j2 --timeout 1800

# Every parser of outside input under libFuzzer + ASan + UBSan (fuzz/, built with clang alone):
# each target for 1,000,000 executions or 10 minutes, one at a time, over a copy of its seeds.
fuzz: deps
	cmake -S fuzz -B $(BUILD)/fuzz -G Ninja -DCMAKE_CXX_COMPILER=clang++ -DCMAKE_C_COMPILER=clang
	ninja -C $(BUILD)/fuzz
	fuzz/run.sh $(BUILD)/fuzz full

$(DATA)/train.bin:
	mkdir -p $(dir $(DATA))
	bible -f "Genesis 1:1-Revelation 22:21" > $(dir $(DATA))kjv.txt
	$(CAIRN) data prepare --input $(dir $(DATA))kjv.txt --out $(DATA)

data: build $(DATA)/train.bin

# The demo's job serves its own dashboard (open the address it prints; its Stop button saves a
# checkpoint and ends the job).
demo: build data
	rm -rf $(RUN)
	$(CAIRN) run --nproc-per-node 2 --run-dir $(RUN) --dashboard-port $(DASHBOARD_PORT) \
	  --dashboard-control -- $(CAIRN) train configs/gpt-kjv.yaml --set data.path=$(DATA)
	$(CAIRN) generate --ckpt $(RUN)/ckpt --prompt "In the beginning" --max-tokens 80 --seed 1

bench: build data
	bench/run_all.sh $(BUILD) $(DATA)

clean:
	rm -rf $(BUILD)
