"""Real servers for the tests, on loopback ports: Dovecot (IMAP). Built from the verified recipe in
../shared/recipes/ (install without starting system daemons; as root, Dovecot's own users must be
able to reach the directory; detach stdio; stop through its own pid file)."""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

DOVECOT = shutil.which("dovecot") or ("/usr/sbin/dovecot" if Path("/usr/sbin/dovecot").exists() else None)


class Dovecot:
    def __init__(self, port: int, user: str, password: str):
        self.port, self.user, self.password = port, user, password
        # not under pytest's 0700 tmp dirs: Dovecot's auth and mail processes must reach it
        self.dir = Path(tempfile.mkdtemp(prefix="listmod-dovecot-", dir="/tmp"))
        os.chmod(self.dir, 0o755)

    def start(self) -> None:
        d = self.dir
        for sub in ("run", "state", "mail"):
            (d / sub).mkdir(exist_ok=True)
        if os.getuid() == 0:
            internal, login = "dovecot", "dovenull"
            uid = pwd.getpwnam("nobody").pw_uid
            gid = grp.getgrnam("nogroup").gr_gid
            os.chown(d / "mail", uid, gid)
        else:
            internal = login = pwd.getpwuid(os.getuid()).pw_name
            uid, gid = os.getuid(), os.getgid()
        (d / "users").write_text(f"{self.user}:{{PLAIN}}{self.password}\n")
        os.chmod(d / "users", 0o644)
        (d / "dovecot.conf").write_text(f"""
instance_name = listmod-test-{self.port}
base_dir = {d}/run
state_dir = {d}/state
log_path = {d}/dovecot.log
protocols = imap
listen = 127.0.0.1
shutdown_clients = yes
default_internal_user = {internal}
default_login_user = {login}
first_valid_uid = {uid}
first_valid_gid = {gid}
ssl = no
disable_plaintext_auth = no
auth_mechanisms = plain login
passdb {{
  driver = passwd-file
  args = scheme=PLAIN username_format=%u {d}/users
}}
userdb {{
  driver = static
  args = uid={uid} gid={gid} home={d}/mail/%n
}}
mail_location = maildir:{d}/mail/%n/Maildir
namespace inbox {{
  inbox = yes
  separator = /
}}
mailbox_idle_check_interval = 1 secs
service imap-login {{
  chroot =
  inet_listener imap {{
    address = 127.0.0.1
    port = {self.port}
  }}
  inet_listener imaps {{
    port = 0
  }}
}}
service anvil {{
  chroot =
}}
""")
        subprocess.run([DOVECOT, "-c", str(d / "dovecot.conf")], stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True, timeout=30)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                time.sleep(0.05)
        raise RuntimeError(f"dovecot did not listen on {self.port}: {(d / 'dovecot.log').read_text()[-2000:]}")

    def stop(self) -> None:
        pidfile = self.dir / "run" / "master.pid"
        if not pidfile.exists():
            return
        pid = int(pidfile.read_text().strip() or 0)
        subprocess.run([DOVECOT, "-c", str(self.dir / "dovecot.conf"), "stop"], stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=30)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(pid, 0)
            except OSError:
                break
            time.sleep(0.05)
        else:
            os.kill(pid, 9)
        pidfile.unlink(missing_ok=True)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)
