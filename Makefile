# The two commands: `make demo` and `make test`. Both install what is missing first.
BUILD ?= build
CAIRN := $(BUILD)/bin/cairn
DATA ?= data/kjv
RUN ?= runs/demo
DASHBOARD_PORT ?= 8265
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: all deps build test demo data bench clean

all: build

deps:
	$(SUDO) scripts/install-deps.sh

build: deps
	cmake -S . -B $(BUILD) -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo
	ninja -C $(BUILD)

test: build
	cd $(BUILD) && ctest --output-on-failure -j2 --timeout 900

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
