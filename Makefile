# asr for Linux. `make demo` and `make test` install the Debian packages they need first.

PREFIX ?= /usr/local
# mount(8) looks for mount.TYPE helpers in /sbin only (/usr/sbin on Debian 12).
SBINDIR ?= /usr/sbin
# systemd reads units from /usr/local/lib/systemd/system too; asr-server@NAME reads CONFDIR/NAME.plist and NAME.env.
SYSTEMDDIR ?= $(PREFIX)/lib/systemd/system
CONFDIR ?= /etc/asr
SWIFT ?= swift
DEB_PACKAGES = pkg-config libfuse3-dev fuse3 zlib1g-dev libdeflate-dev libbz2-dev liblzma-dev libcurl4-openssl-dev \
	e2fsprogs dosfstools mtools fdisk 7zip dmg2img bmap-tools nginx-light nftables iproute2 python3 util-linux \
	libavahi-client-dev avahi-daemon avahi-utils dbus-daemon ntfs-3g ntfs-3g-dev libext2fs-dev sleuthkit attr \
	chromium chromium-driver python3-selenium prometheus systemd
BIN = .build/debug/asr
# make fuzz: seconds per harness, harnesses run at once, which harnesses (default all).
FUZZ_SECONDS ?= 60
FUZZ_JOBS ?= 1
FUZZ_TARGETS ?=
FIXTURES ?= ../shared/fixtures/udif

.PHONY: all deps build release demo test check tsan fuzz install install-systemd uninstall clean

all: build

# Installs only what is missing; apt-get update runs once, and only when something is.
deps:
	@missing=""; for p in $(DEB_PACKAGES); do \
		dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'install ok installed' || missing="$$missing $$p"; \
	done; \
	if [ -n "$$missing" ]; then \
		echo "Installing:$$missing"; \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

build: deps
	$(SWIFT) build --product asr

release: deps
	$(SWIFT) build -c release --product asr

demo: build
	ASR=$(BIN) demo/demo.sh

test: deps
	$(SWIFT) build --build-tests
	$(SWIFT) test --skip-build

# The in-process suites only, selected by test target: no root, namespaces, browser or package
# installs; what a contributor runs after each change (make test still runs everything).
CHECK_TARGETS = UDIFTests|ImagingTests|MulticastTests|FilesystemsTests|StatusServerTests|CommandSupportTests|FuzzTests|ImageFSTests
check:
	$(SWIFT) build --build-tests
	$(SWIFT) test --skip-build --filter '^($(CHECK_TARGETS))\.'

# ThreadSanitizer over the suites whose work is not paced by the clock (multicast at a set data
# rate cannot keep up when TSan slows everything ~10x). TSan takes signals first and defers
# them; under it, SIGTERM did not unmount within that test's wait, so the test is skipped.
# Reports go to $(TSAN_LOGS)/report.PID.
TSAN_LOGS ?= /tmp/asr-tsan
tsan: deps
	$(SWIFT) build --build-tests --scratch-path .build-tsan -Xswiftc -sanitize=thread
	rm -rf $(TSAN_LOGS); mkdir -p $(TSAN_LOGS)
	TSAN_OPTIONS="halt_on_error=0 log_path=$(TSAN_LOGS)/report" $(SWIFT) test --skip-build --scratch-path .build-tsan \
		--filter "UDIFTests|ImagingTests|ImageFSTests|MulticastTests|StatusServerTests|CommandSupportTests|MountTests|FixtureCommandTests|InteropTests|ScanRestoreTests|BadInputTests" \
		--skip sigtermUnmountsTheBackgroundProcess
	@if grep -l "WARNING: ThreadSanitizer" $(TSAN_LOGS)/* 2>/dev/null; then echo "ThreadSanitizer reported the above"; exit 1; fi

# libFuzzer with AddressSanitizer, in a build folder of its own; the toolchain's lld links it
# (gold fails on it). fuzz/run.sh seeds each harness from the fixtures and reports at the end.
fuzz: deps
	$(SWIFT) build -c release --scratch-path .build-fuzz --product Fuzz \
		-Xswiftc -sanitize=fuzzer,address -Xswiftc -Xclang-linker -Xswiftc -fuse-ld=lld
	FUZZ_SECONDS=$(FUZZ_SECONDS) FUZZ_JOBS=$(FUZZ_JOBS) FUZZ_TARGETS="$(FUZZ_TARGETS)" \
		fuzz/run.sh .build-fuzz/release/Fuzz $(FIXTURES)

install: release install-systemd
	install -D -m 0755 .build/release/asr $(DESTDIR)$(PREFIX)/bin/asr
	install -D -m 0755 mount-helpers/asr-mount-fs $(DESTDIR)$(PREFIX)/bin/asr-mount-fs
	install -D -m 0755 mount-helpers/mount.asr $(DESTDIR)$(SBINDIR)/mount.asr
	install -D -m 0644 docs/asr.1 $(DESTDIR)$(PREFIX)/share/man/man1/asr.1

# The server's unit, its paths filled in; systemd rereads its units when it runs here.
install-systemd:
	install -d $(DESTDIR)$(SYSTEMDDIR)
	sed -e 's|@BINDIR@|$(PREFIX)/bin|g' -e 's|@CONFDIR@|$(CONFDIR)|g' mount-helpers/asr-server@.service \
		> $(DESTDIR)$(SYSTEMDDIR)/asr-server@.service
	chmod 0644 $(DESTDIR)$(SYSTEMDDIR)/asr-server@.service
	@if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then systemctl daemon-reload; fi

uninstall:
	rm -f $(DESTDIR)$(PREFIX)/bin/asr $(DESTDIR)$(PREFIX)/bin/asr-mount-fs $(DESTDIR)$(SBINDIR)/mount.asr \
		$(DESTDIR)$(PREFIX)/share/man/man1/asr.1 $(DESTDIR)$(SYSTEMDDIR)/asr-server@.service
	@if [ -z "$(DESTDIR)" ] && [ -d /run/systemd/system ]; then systemctl daemon-reload; fi

clean:
	rm -rf .build
