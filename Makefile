# clusterd — `make run` and `make test` are the two commands a fresh Debian 12 machine with Swift needs.
SWIFT ?= $(shell command -v swift 2>/dev/null || echo /opt/swift/usr/bin/swift)
CONFIG ?= config/clusterd.json
PREFIX ?= /usr/local
RELEASE_FLAGS = -c release --static-swift-stdlib
# Examples/todo: a package of its own (postgres-nio, Hummingbird), so clusterd never links swift-nio.
# SwiftPM names a path dependency after its folder: a checkout in a folder called `todo` would be
# the same package as Examples/todo, and its build fails ("product 'Cluster' ... not found").
TODO_PKG = Examples/todo
TODO_BUILD = @[ "$(notdir $(CURDIR))" != todo ] || { echo "make: this checkout's folder is named todo, like Examples/todo: SwiftPM takes them for one package; rename the folder" >&2; exit 1; }; $(SWIFT) build $(RELEASE_FLAGS) --package-path $(TODO_PKG)
# Python with pytest: the one on PATH if it has pytest, else Debian's.
PYTHON = $(shell python3 -c 'import pytest, prometheus_client' 2>/dev/null && echo python3 || echo /usr/bin/python3)

.PHONY: all build debug run test unit integration bench bench-conns bench-tls bench-todo chaos fuzz install uninstall clean

all: build

build:
	./scripts/deps.sh run
	$(SWIFT) build $(RELEASE_FLAGS)

debug:
	$(SWIFT) build

run: build
	exec .build/release/clusterd --config $(CONFIG)

test:
	./scripts/check-kernel-door.sh --self-test
	./scripts/check-kernel-door.sh
	./scripts/deps.sh test
	$(MAKE) unit integration

unit:
	$(SWIFT) build --build-tests
	$(SWIFT) test --skip-build

integration:
	$(SWIFT) build $(RELEASE_FLAGS)
	$(TODO_BUILD) --product clusterd-todo
	CLUSTERD_BIN=$(CURDIR)/.build/release TODO_BIN=$(CURDIR)/$(TODO_PKG)/.build/release $(PYTHON) -m pytest -q Tests/integration

bench:
	./scripts/deps.sh bench
	$(SWIFT) build $(RELEASE_FLAGS)
	./scripts/bench.sh
	python3 scripts/bench_floor.py
	python3 scripts/bench_tls.py
	$(MAKE) bench-todo

# HTTPS against nginx with one ECDSA P-256 certificate: keep-alive, full and resumed handshakes,
# memory per idle TLS connection (scripts/bench_tls.py).
bench-tls:
	./scripts/deps.sh bench
	$(SWIFT) build $(RELEASE_FLAGS)
	python3 scripts/bench_tls.py

# 10,000 and 50,000 busy keep-alive connections, clusterd against nginx (scripts/bench_conns.py).
bench-conns:
	./scripts/deps.sh bench
	$(SWIFT) build $(RELEASE_FLAGS)
	python3 scripts/bench_conns.py

# The application-server half of `make bench` alone: clusterd-todo against hummingbird-todo on
# PostgreSQL, the async path's cost, 1,000 concurrent sleeps (scripts/bench_todo.py).
bench-todo:
	./scripts/deps.sh bench
	$(SWIFT) build $(RELEASE_FLAGS) --product clusterd-example
	$(TODO_BUILD)
	python3 scripts/bench_todo.py

# A longer chaos run than the suite's: CHAOS_DURATION seconds (default 120).
chaos:
	./scripts/deps.sh test
	$(SWIFT) build $(RELEASE_FLAGS)
	mkdir -p bench-results
	python3 scripts/chaos.py --duration $${CHAOS_DURATION:-120} --json bench-results/chaos.json

# The libFuzzer targets (Fuzz/*/): FUZZ_SECONDS each (default 300); FUZZ_TARGETS to pick some.
fuzz:
	./scripts/fuzz.sh $${FUZZ_SECONDS:-300}

install: build
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)/etc/clusterd $(DESTDIR)/lib/systemd/system
	install -m 0755 .build/release/clusterd .build/release/clusterctl $(DESTDIR)$(PREFIX)/bin/
	[ -e $(DESTDIR)/etc/clusterd/clusterd.json ] || install -m 0644 config/clusterd.json $(DESTDIR)/etc/clusterd/clusterd.json
	sed -e 's|@BINDIR@|$(PREFIX)/bin|g' -e 's|@CONFIG@|/etc/clusterd/clusterd.json|g' systemd/clusterd.service > $(DESTDIR)/lib/systemd/system/clusterd.service
	install -d $(DESTDIR)/usr/lib/sysusers.d
	install -m 0644 systemd/clusterd.sysusers $(DESTDIR)/usr/lib/sysusers.d/clusterd.conf
	[ -n "$(DESTDIR)" ] || systemd-sysusers /usr/lib/sysusers.d/clusterd.conf
	@echo "installed; now: systemctl daemon-reload && systemctl enable --now clusterd"

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/clusterd $(DESTDIR)$(PREFIX)/bin/clusterctl $(DESTDIR)/lib/systemd/system/clusterd.service $(DESTDIR)/usr/lib/sysusers.d/clusterd.conf

clean:
	rm -rf .build $(TODO_PKG)/.build
