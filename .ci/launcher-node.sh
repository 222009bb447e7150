#!/usr/bin/env bash
# A machine for Ray's cluster launcher to reach, on this machine and on loopback only, for
# tests/test_launcher.py (`ray up` of clusters/local.yaml with Ray's `local` provider):
#   - an SSH server of its own listening on 127.0.0.1:2222 and nowhere else (Debian's
#     openssh-server; its default daemon on every interface is kept from starting);
#   - a dedicated unprivileged user, raylaunch, that logs in with a key made here only for the
#     test (/etc/image-search-ci/id_ed25519): nothing in root's home is read or changed;
#   - the environment clusters/local.yaml's setup reuses instead of a full install
#     (~raylaunch/image-search-venv, a link to /opt/image-search-ci/venv: Python 3.11 with this
#     project's pinned dependencies, installed once per machine; the time it took is printed).
#   - the node user's own Ray temp directory (RAY_TMPDIR in its ~/.bashrc), so that its
#     `--address auto` finds the launched cluster, not another Ray session of this machine.
# Idempotent: run again on a machine where it already ran, it restarts the same SSH server and
# reuses what exists. `bash .ci/launcher-node.sh stop` stops that SSH server and removes the user
# (the environment in /opt stays, for the next run). Needs root (CI runs as root).
set -euo pipefail
REPO="$(cd "$(dirname "$0")/.." && pwd)"
CI_DIR=/etc/image-search-ci
NODE_USER=raylaunch
LISTEN=127.0.0.1:2222
ENV_DIR=/opt/image-search-ci/venv
NODE_TMP=/tmp/raylaunch
PID_FILE=/run/image-search-ci-sshd.pid
export DEBIAN_FRONTEND=noninteractive

stop_sshd() {
    if [ -f "$PID_FILE" ] && kill -0 "$(cat "$PID_FILE")" 2>/dev/null; then
        kill "$(cat "$PID_FILE")"
        sleep 1
    fi
}

if [ "${1:-}" = stop ]; then
    stop_sshd
    if id -u "$NODE_USER" >/dev/null 2>&1; then
        userdel -r "$NODE_USER" 2>/dev/null || echo "launcher node: could not remove $NODE_USER (processes left?)" >&2
    fi
    rm -rf "$NODE_TMP"
    exit 0
fi

# Debian's own sshd (port 22, every interface) must not start when the package is installed.
mkdir -p /etc/ssh && touch /etc/ssh/sshd_not_to_be_run
if ! { [ -x /usr/sbin/sshd ] && [ -x /usr/bin/python3.11 ] && command -v ssh rsync nc >/dev/null; }; then
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends openssh-server openssh-client rsync netcat-openbsd \
        python3.11 python3.11-venv >/dev/null
fi
if [ -f /run/sshd.pid ] && kill -0 "$(cat /run/sshd.pid)" 2>/dev/null; then
    kill "$(cat /run/sshd.pid)"  # a default daemon that started anyway
fi

id -u "$NODE_USER" >/dev/null 2>&1 || useradd --create-home --shell /bin/bash "$NODE_USER"
usermod -p '*' "$NODE_USER"  # no password at all (key only), but not a locked account
install -d -m 755 "$CI_DIR"
[ -f "$CI_DIR/ssh_host_ed25519_key" ] || ssh-keygen -q -t ed25519 -N "" -f "$CI_DIR/ssh_host_ed25519_key"
[ -f "$CI_DIR/id_ed25519" ] || ssh-keygen -q -t ed25519 -N "" -C image-search-ci -f "$CI_DIR/id_ed25519"
HOME_DIR="$(getent passwd "$NODE_USER" | cut -d: -f6)"
install -d -m 700 -o "$NODE_USER" -g "$NODE_USER" "$HOME_DIR/.ssh"
install -m 600 -o "$NODE_USER" -g "$NODE_USER" "$CI_DIR/id_ed25519.pub" "$HOME_DIR/.ssh/authorized_keys"

cat >"$CI_DIR/sshd_config" <<EOF
ListenAddress $LISTEN
HostKey $CI_DIR/ssh_host_ed25519_key
PidFile $PID_FILE
AllowUsers $NODE_USER
PermitRootLogin no
PasswordAuthentication no
KbdInteractiveAuthentication no
PubkeyAuthentication yes
AuthorizedKeysFile .ssh/authorized_keys
X11Forwarding no
MaxSessions 50
MaxStartups 50
Subsystem sftp internal-sftp
EOF
mkdir -p /run/sshd
stop_sshd
/usr/sbin/sshd -t -f "$CI_DIR/sshd_config"
/usr/sbin/sshd -f "$CI_DIR/sshd_config"

# The environment to reuse: a full install of the project's pinned dependencies, once per machine.
# Debian's interpreter, not root's (pyenv's lies under /root, which the node user cannot enter).
if ! runuser -u "$NODE_USER" -- "$ENV_DIR/bin/python" -c "import torch, torchvision, ray, optuna, timm, sklearn" 2>/dev/null; then
    started=$(date +%s)
    rm -rf "$ENV_DIR"
    /usr/bin/python3.11 -m venv "$ENV_DIR"
    "$ENV_DIR/bin/python" -c "import tomllib, sys; print(*tomllib.load(open(sys.argv[1], 'rb'))['project']['dependencies'], sep='\n')" \
        "$REPO/pyproject.toml" >"$CI_DIR/requirements.txt"
    "$ENV_DIR/bin/pip" install -q --cache-dir /var/cache/image-search-ci/pip -r "$CI_DIR/requirements.txt"
    echo "launcher node: full install of the pinned dependencies took $(( $(date +%s) - started )) s"
fi
chown -R "$NODE_USER:$NODE_USER" /opt/image-search-ci
[ -L "$HOME_DIR/image-search-venv" ] || { rm -rf "$HOME_DIR/image-search-venv"; ln -s "$ENV_DIR" "$HOME_DIR/image-search-venv"; }
chown -h "$NODE_USER:$NODE_USER" "$HOME_DIR/image-search-venv"
install -d -m 700 -o "$NODE_USER" -g "$NODE_USER" "$NODE_TMP"
if ! grep -q RAY_TMPDIR "$HOME_DIR/.bashrc" 2>/dev/null; then
    { echo "export RAY_TMPDIR=$NODE_TMP  # this user's Ray sessions, apart from other users' on this machine"
      cat "$HOME_DIR/.bashrc" 2>/dev/null || true; } >"$HOME_DIR/.bashrc.new"
    mv "$HOME_DIR/.bashrc.new" "$HOME_DIR/.bashrc"
    chown "$NODE_USER:$NODE_USER" "$HOME_DIR/.bashrc"
fi
echo "launcher node: sshd on $LISTEN for $NODE_USER, key $CI_DIR/id_ed25519, environment $ENV_DIR"
