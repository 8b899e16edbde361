#!/usr/bin/env bash
# Installs Dovecot for billhook-mailbox's integration tests, which start their own private
# instance (tests/common/mod.rs). Idempotent. The system service is not wanted: it would
# hold ports 143/993 and is never used by the tests, so it is stopped and disabled.
set -euo pipefail

if ! command -v dovecot >/dev/null 2>&1 && [ ! -x /usr/sbin/dovecot ]; then
  SUDO=""
  if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi
  $SUDO apt-get update -qq
  # policy-rc.d (where present) or the lack of systemd may keep the service from starting;
  # either way it is stopped below.
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq dovecot-imapd >/dev/null
fi

stop_service() {
  if command -v systemctl >/dev/null 2>&1 && [ -d /run/systemd/system ]; then
    systemctl stop dovecot.service dovecot.socket >/dev/null 2>&1 || true
    systemctl disable dovecot.service dovecot.socket >/dev/null 2>&1 || true
  fi
  if [ -x /etc/init.d/dovecot ]; then
    /etc/init.d/dovecot stop >/dev/null 2>&1 || true
  fi
  if command -v update-rc.d >/dev/null 2>&1; then
    update-rc.d dovecot disable >/dev/null 2>&1 || true
  fi
}
if [ "$(id -u)" = 0 ]; then
  stop_service
elif command -v sudo >/dev/null 2>&1; then
  sudo bash -c "$(declare -f stop_service); stop_service" || true
fi

# The system instance runs from /etc/dovecot/dovecot.conf with its pid in /run/dovecot;
# the tests' instances live in their own tempdirs and are not touched here.
if [ -f /run/dovecot/master.pid ] && kill -0 "$(cat /run/dovecot/master.pid)" 2>/dev/null; then
  kill "$(cat /run/dovecot/master.pid)" || true
fi

dovecot_bin="$(command -v dovecot || echo /usr/sbin/dovecot)"
echo "dovecot $("$dovecot_bin" --version) installed; system service not running"
