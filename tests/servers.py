"""Real servers for the tests, on loopback ports: Dovecot (IMAP) and INN (NNTP). Built from the
verified recipes in ../shared/recipes/ (install without starting system daemons; as root, the
servers' own users must be able to reach the directory; detach stdio; stop through their own pid
file or control socket)."""

from __future__ import annotations

import grp
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import warnings
from pathlib import Path

DOVECOT = shutil.which("dovecot") or ("/usr/sbin/dovecot" if Path("/usr/sbin/dovecot").exists() else None)


class Dovecot:
    def __init__(self, port: int, user: str, password: str, tls: tuple[Path, Path] | None = None):
        """`tls`: (certificate chain, key) PEM files; then Dovecot offers STARTTLS."""
        self.port, self.user, self.password, self.tls = port, user, password, tls
        # not under pytest's 0700 tmp dirs: Dovecot's auth and mail processes must reach it
        self.dir = Path(tempfile.mkdtemp(prefix="listmod-dovecot-", dir="/tmp"))
        os.chmod(self.dir, 0o755)

    def start(self) -> None:
        if DOVECOT is None:
            raise not_installed("dovecot", "dovecot-imapd")
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
        ssl_settings = "ssl = no"
        if self.tls is not None:
            shutil.copy(self.tls[0], d / "tls.crt")
            shutil.copy(self.tls[1], d / "tls.key")
            ssl_settings = f"ssl = yes\nssl_cert = <{d}/tls.crt\nssl_key = <{d}/tls.key"
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
{ssl_settings}
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
        _wait_for_exit(pid, 10)
        pidfile.unlink(missing_ok=True)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def _wait_for_exit(pid: int, timeout: float) -> None:
    """Wait for a server's master process to exit after its own stop command; kill it if it hangs."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except OSError:
            return
        time.sleep(0.05)
    os.kill(pid, 9)


def stop_process(proc: subprocess.Popen | None, timeout: float = 10) -> None:
    """SIGTERM, then SIGKILL if it has not exited within `timeout` seconds."""
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def not_installed(name: str, package: str) -> RuntimeError:
    """A real-server test fails, never skips, when its server cannot start: this says how to get it."""
    return RuntimeError(f"{name} is not installed: `make test` installs it (.ci/install-servers runs "
                        f"apt-get install {package} as root)")


INN_BIN = next((d for d in ("/usr/lib/news/bin", "/usr/libexec/news", "/usr/lib/inn/bin")
                if Path(d, "innd").exists()), None)


class Inn:
    """A throwaway INN news server on 127.0.0.1:PORT with everything under its own directory
    (INNCONF points innd and its tools at DIR/etc/inn.conf; /etc/news is never read). Loopback
    connections are readers, handed to nnrpd, with posting and Approved: allowed. Groups:
    test.moderated (m), test.other (m), test.open (y). As root, innd runs as `news` (it refuses
    root), so DIR is chowned to it and every command is run through setpriv. Stopping and starting
    again keeps the articles and history, as a real server does."""

    GROUPS = ("test.moderated", "test.other", "test.open")

    def __init__(self, port: int, logins: dict[str, str] | None = None, tls: tuple[Path, Path] | None = None):
        self.port = port
        self.logins = logins or {}  # when given, posting needs AUTHINFO as one of these users
        self.tls = tls              # (certificate chain, key) PEM files: nnrpd then offers STARTTLS
        # short (unix sockets live under it) and outside pytest's 0700 tmp dirs: `news` must reach it
        self.dir = Path(tempfile.mkdtemp(prefix="listmod-inn-", dir="/tmp"))
        os.chmod(self.dir, 0o755)
        self.env = dict(os.environ, INNCONF=str(self.dir / "etc" / "inn.conf"))
        self.as_news: list[str] = []
        if os.getuid() == 0:
            self.as_news = ["setpriv", "--reuid=news", "--regid=news", "--init-groups", "--"]

    def _run(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        assert INN_BIN is not None
        return subprocess.run([*self.as_news, f"{INN_BIN}/{args[0]}", *args[1:]], env=self.env,
                              stdin=subprocess.DEVNULL, capture_output=True, timeout=30, check=check)

    def _configure(self) -> None:
        d = self.dir
        for sub in ("etc", "db", "run", "log", "tmp", "filter", "http", "spool/articles", "spool/overview",
                    "spool/incoming/tmp", "spool/incoming/bad", "spool/outgoing", "spool/archive"):
            (d / sub).mkdir(parents=True, exist_ok=True)
        user = "news" if os.getuid() == 0 else pwd.getpwuid(os.getuid()).pw_name
        group = "news" if os.getuid() == 0 else grp.getgrgid(os.getgid()).gr_name
        paths = {"pathnews": d, "pathbin": INN_BIN, "pathcontrol": f"{INN_BIN}/control",
                 "pathfilter": d / "filter", "pathetc": d / "etc", "pathdb": d / "db", "pathrun": d / "run",
                 "pathlog": d / "log", "pathhttp": d / "http", "pathtmp": d / "tmp", "pathspool": d / "spool",
                 "patharticles": d / "spool/articles", "pathoverview": d / "spool/overview",
                 "pathincoming": d / "spool/incoming", "pathoutgoing": d / "spool/outgoing",
                 "patharchive": d / "spool/archive"}
        settings = {
            "domain": "localdomain", "pathhost": "loopback.test", "fromhost": "loopback.test",
            "server": "127.0.0.1", "organization": '"listmod test server"', "runasuser": user,
            "runasgroup": group, "bindaddress": "127.0.0.1", "port": self.port, "nnrpdpostport": self.port,
            "mta": f'"{d}/bin/mailer %s"', "mailcmd": "/bin/false", "hismethod": "hisv6", "ovmethod": "tradindexed",
            "enableoverview": "true", "storeonxref": "true", "wireformat": "true", "noreader": "false",
            "readerswhenstopped": "false", "docancels": '"require-auth"', "pgpverify": "false",
            "doinnwatch": "false", "logipaddr": "true", "status": 0, "timer": 0, "maxconnections": 50,
            "artcutoff": 0, "initialtimeout": 10, "clienttimeout": 600, **paths}
        (d / "bin").mkdir(exist_ok=True)
        (d / "bin/mailer").write_text(MAILER)
        os.chmod(d / "bin/mailer", 0o755)
        if self.tls is not None:
            shutil.copy(self.tls[0], d / "etc/tls.crt")
            shutil.copy(self.tls[1], d / "etc/tls.key")
            os.chmod(d / "etc/tls.key", 0o600)   # nnrpd refuses a key that others can read
            settings.update(tlscertfile=d / "etc/tls.crt", tlskeyfile=d / "etc/tls.key")
        (d / "etc/inn.conf").write_text("".join(f"{k}: {v}\n" for k, v in settings.items()))
        (d / "etc/incoming.conf").write_text("streaming: true\nmax-connections: 8\n")
        if self.logins:  # anyone may read; only a logged-in user may post (and approve)
            (d / "etc/passwd.nntp").write_text("".join(f"{u}:{_crypt(pw)}\n" for u, pw in self.logins.items()))
            (d / "etc/readers.conf").write_text(
                f'auth "localhost" {{\n  hosts: "localhost, 127.0.0.1, ::1"\n'
                f'  auth: "ckpasswd -f {d}/etc/passwd.nntp"\n  default: "<anonymous>"\n}}\n'
                'access "readers" {\n  users: "<anonymous>"\n  newsgroups: "*"\n  access: R\n}\n'
                'access "posters" {\n  users: "' + ",".join(self.logins) + '"\n  newsgroups: "*"\n'
                '  access: RPA\n}\n')
        else:
            (d / "etc/readers.conf").write_text(
                'auth "localhost" {\n  hosts: "localhost, 127.0.0.1, ::1, stdin"\n  default: "<localhost>"\n}\n'
                'access "localhost" {\n  users: "<localhost>"\n  newsgroups: "*"\n  access: RPA\n}\n')
        (d / "etc/newsfeeds").write_text("ME:*::\n")
        (d / "etc/storage.conf").write_text("method timehash {\n  newsgroups: *\n  class: 0\n}\n")
        (d / "etc/expire.ctl").write_text("/remember/:11\n*:A:1:10:never\n")
        (d / "etc/control.ctl").write_text("all:*:*:drop\n")
        for name in ("moderators", "control.ctl.local", "distrib.pats", "distributions", "localgroups",
                     "passwd.nntp", "subscriptions"):
            if not (d / "etc" / name).exists():
                (d / "etc" / name).write_text("")
        active = d / "db/active"
        fresh = not active.exists()
        if fresh:
            flags = {"test.open": "y"}
            active.write_text("control 0000000000 0000000001 n\ncontrol.cancel 0000000000 0000000001 n\n"
                              "junk 0000000000 0000000001 n\n" + "".join(
                                  f"{g} 0000000000 0000000001 {flags.get(g, 'm')}\n" for g in self.GROUPS))
            (d / "db/newsgroups").write_text("".join(f"{g}\tlistmod test group\n" for g in self.GROUPS))
            (d / "db/active.times").write_text("")
            (d / "db/history").write_text("")
        if os.getuid() == 0:
            subprocess.run(["chown", "-R", "news:news", str(d)], check=True)
            os.chmod(d, 0o755)
        if fresh:
            self._run("makedbz", "-i", "-o")

    def mail_submissions(self, group: str, address: str, smtp_port: int) -> None:
        """Make `group` send its unapproved submissions to `address`, by SMTP to 127.0.0.1:smtp_port
        (the moderators file and mta of a real installation); nnrpd reads both for each post."""
        moderators = self.dir / "etc/moderators"
        moderators.write_text(moderators.read_text() + f"{group}:{address}\n")
        (self.dir / "etc/mailer-port").write_text(str(smtp_port))
        os.chmod(self.dir / "etc/mailer-port", 0o644)

    def start(self) -> None:
        if INN_BIN is None:
            raise not_installed("INN", "inn2")
        self._configure()
        self._run("innd")  # detaches by itself
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                if (self.dir / "run/control").exists():
                    # as rc.news does at boot: articles nnrpd spooled while innd was going or gone
                    # (answered 240 all the same) are fed to innd now
                    self._run("rnews", "-U", check=False)
                    return
            except OSError:
                pass
            time.sleep(0.05)
        logs = "".join(p.read_text(errors="replace")[-1500:] for p in (self.dir / "log").glob("*") if p.is_file())
        raise RuntimeError(f"innd did not listen on 127.0.0.1:{self.port}: {logs}")

    def stop(self) -> None:
        pidfile = self.dir / "run/innd.pid"
        if not pidfile.exists() or not pidfile.read_text().strip():
            return
        pid = int(pidfile.read_text().strip())
        self._run("ctlinnd", "-t", "10", "shutdown", "test stop", check=False)
        _wait_for_exit(pid, 15)
        pidfile.unlink(missing_ok=True)
        # the port is free once innd is gone (nnrpd children exit with their clients)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def _crypt(password: str) -> str:
    """A crypt(3) SHA-512 hash for ckpasswd's password file (the crypt module until Python 3.12,
    else openssl)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import crypt
        return crypt.crypt(password, crypt.mksalt(crypt.METHOD_SHA512))
    except ImportError:
        pass
    out = subprocess.run(["openssl", "passwd", "-6", password], capture_output=True, text=True, check=True)
    return out.stdout.strip()


# INN's mta: sendmail-like (the address is the argument, the message on stdin), but speaking SMTP
# to the port in etc/mailer-port, so that a moderated group's submissions reach listmod.
MAILER = """#!/usr/bin/python3
import pathlib, smtplib, sys
home = pathlib.Path(__file__).resolve().parent.parent
data = sys.stdin.buffer.read().replace(b"\\r\\n", b"\\n").replace(b"\\n", b"\\r\\n")
with smtplib.SMTP("127.0.0.1", int((home / "etc/mailer-port").read_text()), timeout=30) as s:
    s.sendmail("news@loopback.test", sys.argv[1:], data)
"""


POSTFIX = shutil.which("postfix") or ("/usr/sbin/postfix" if Path("/usr/sbin/postfix").exists() else None)

_POSTFIX_SERVICES = """\
pickup    unix  n - n 60 1 pickup
cleanup   unix  n - n - 0 cleanup
qmgr      unix  n - n 300 1 qmgr
rewrite   unix  - - n - - trivial-rewrite
bounce    unix  - - n - 0 bounce
defer     unix  - - n - 0 bounce
trace     unix  - - n - 0 bounce
verify    unix  - - n - 1 verify
flush     unix  n - n 1000? 0 flush
proxymap  unix  - - n - - proxymap
smtp      unix  - - n - - smtp
relay     unix  - - n - - smtp
showq     unix  n - n - - showq
error     unix  - - n - - error
retry     unix  - - n - - error
discard   unix  - - n - - discard
lmtp      unix  - - n - - lmtp
anvil     unix  - - n - 1 anvil
scache    unix  - - n - 1 scache
postlog   unix-dgram n - n - 1 postlogd
"""


class Postfix:
    """A throwaway Postfix on loopback with its own config, queue and log under one directory
    (`postfix -c DIR/etc`; /etc/postfix is read only for its file lists). Everything it does not
    hand to a transport of its own goes to `relayhost` (the test's sink). `main` and `master` are
    added to a minimal main.cf and to the internal services of master.cf. As root, the data
    directory is chowned to `postfix`, which is the only quirk of running it there."""

    def __init__(self, relayhost_port: int, main: str = "", master: str = ""):
        self.dir = Path(tempfile.mkdtemp(prefix="listmod-postfix-", dir="/tmp"))
        os.chmod(self.dir, 0o755)
        self.relayhost_port, self.main, self.master = relayhost_port, main, master

    @property
    def config_dir(self) -> Path:
        return self.dir / "etc"

    def _postfix(self, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        assert POSTFIX is not None
        return subprocess.run([POSTFIX, "-c", str(self.config_dir), *args], stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=60, check=check)

    def start(self) -> None:
        if POSTFIX is None:
            raise not_installed("postfix", "postfix")
        d = self.dir
        for sub in ("etc", "queue", "data"):
            (d / sub).mkdir(exist_ok=True)
        if os.getuid() == 0:
            os.chown(d / "data", pwd.getpwnam("postfix").pw_uid, -1)
        (d / "etc/main.cf").write_text(f"""\
compatibility_level = 3.6
queue_directory = {d}/queue
data_directory = {d}/data
meta_directory = /etc/postfix
mail_owner = postfix
setgid_group = postdrop
maillog_file = {d}/maillog
maillog_file_prefixes = {d}
myhostname = mx.example.test
mydomain = example.test
myorigin = example.test
mydestination =
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
mynetworks = 127.0.0.0/8
relayhost = [127.0.0.1]:{self.relayhost_port}
smtp_tls_security_level = none
alias_maps =
alias_database =
biff = no
smtputf8_enable = yes
maximal_queue_lifetime = 1h
bounce_queue_lifetime = 1h
{self.main}
""")
        (d / "etc/master.cf").write_text(self.master + "\n" + _POSTFIX_SERVICES)
        started = self._postfix("start", check=False)
        if started.returncode != 0:
            raise RuntimeError(f"postfix -c {self.config_dir} start failed ({started.returncode}): "
                               f"{started.stdout}{started.stderr}\nmaillog: {self.log()[-2000:]}")
        ports = [int(line.split()[0].rsplit(":", 1)[1]) for line in self.master.splitlines()
                 if line and not line[0].isspace() and " inet " in f" {line} "]
        deadline = time.monotonic() + 20
        for port in ports:
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                    break
                except OSError:
                    if time.monotonic() > deadline:
                        raise RuntimeError(f"postfix did not listen on {port}: {self.log()[-2000:]}") from None
                    time.sleep(0.05)

    def log(self) -> str:
        path = self.dir / "maillog"
        return path.read_text(errors="replace") if path.exists() else ""

    def queued(self) -> list[str]:
        """The queue files of messages Postfix still holds (bounces included) — empty when all went."""
        queue = self.dir / "queue"
        return [str(p.relative_to(queue)) for sub in ("maildrop", "incoming", "active", "deferred", "hold")
                for p in (queue / sub).rglob("*") if p.is_file()]

    def stop(self) -> None:
        pidfile = self.dir / "queue/pid/master.pid"
        if not pidfile.exists() or not pidfile.read_text().strip():
            return
        pid = int(pidfile.read_text().strip())
        self._postfix("stop", check=False)
        _wait_for_exit(pid, 15)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


OPENDKIM = shutil.which("opendkim") or ("/usr/sbin/opendkim" if Path("/usr/sbin/opendkim").exists() else None)


class OpenDkim:
    """OpenDKIM as a milter on 127.0.0.1:PORT, verifying only: it writes Authentication-Results
    under `authserv_id`. Public keys come from a file (`TestPublicKeys`) in place of DNS, the
    one test-only setting; everything else is as a Postfix host would configure it."""

    def __init__(self, port: int, authserv_id: str, public_keys: dict[str, str]):
        self.port, self.authserv_id, self.public_keys = port, authserv_id, public_keys
        self.dir = Path(tempfile.mkdtemp(prefix="listmod-opendkim-", dir="/tmp"))
        os.chmod(self.dir, 0o755)
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        if OPENDKIM is None:
            raise not_installed("opendkim", "opendkim")
        d = self.dir
        (d / "keys").write_text("".join(f"{name} {record}\n" for name, record in self.public_keys.items()))
        user = "opendkim" if os.getuid() == 0 else pwd.getpwuid(os.getuid()).pw_name
        (d / "opendkim.conf").write_text(f"""\
Mode v
Socket inet:{self.port}@127.0.0.1
AuthservID {self.authserv_id}
TestPublicKeys {d}/keys
UserID {user}
PidFile {d}/opendkim.pid
Syslog no
LogResults yes
AlwaysAddARHeader yes
""")
        os.chmod(d / "keys", 0o644)
        log = open(d / "opendkim.log", "wb")
        self.proc = subprocess.Popen([OPENDKIM, "-f", "-x", str(d / "opendkim.conf")],
                                     stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        log.close()
        deadline = time.monotonic() + 15
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"opendkim did not listen on {self.port}: "
                                       f"{(d / 'opendkim.log').read_text(errors='replace')[-2000:]}") from None
                time.sleep(0.05)

    def stop(self) -> None:
        stop_process(self.proc)

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


DNSMASQ = shutil.which("dnsmasq") or ("/usr/sbin/dnsmasq" if Path("/usr/sbin/dnsmasq").exists() else None)


class DnsServer:
    """dnsmasq answering on 127.0.0.1:PORT (UDP and TCP) for the given TXT records only: no
    upstream, no /etc/hosts, nothing else answered (NXDOMAIN for the rest of the test domains)."""

    def __init__(self, port: int, txt: dict[str, str], domains: tuple[str, ...]):
        self.port, self.txt, self.domains = port, txt, domains
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        if DNSMASQ is None:
            raise not_installed("dnsmasq", "dnsmasq-base")
        args = [DNSMASQ, "--keep-in-foreground", "--no-resolv", "--no-hosts", "--no-poll", "--pid-file=",
                f"--port={self.port}", "--listen-address=127.0.0.1", "--bind-interfaces", "--log-facility=-",
                "--log-queries", *[f"--local=/{d}/" for d in self.domains],
                *[f"--txt-record={name},{value}" for name, value in self.txt.items()]]
        if os.getuid() == 0:
            args.append("--user=nobody")
        fd, name = tempfile.mkstemp(prefix="listmod-dnsmasq-", suffix=".log")
        self.log_path = Path(name)
        self.proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=fd, stderr=subprocess.STDOUT)
        os.close(fd)
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.5).close()
                return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"dnsmasq did not listen on {self.port}: {self.log()[-2000:]}") from None
                time.sleep(0.05)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        stop_process(self.proc)
        self.log_path.unlink(missing_ok=True)


def fill_disk(path: Path) -> None:
    """Write zeros to `path` until its file system is full (a test's tmpfs). `path` may have been
    created beforehand, while there was room; if it cannot be opened, the error says what the file
    system held then."""
    try:
        f = open(path, "r+b" if path.exists() else "wb")
    except OSError as err:
        df = subprocess.run(["df", "-k", str(path.parent)], capture_output=True, text=True).stdout
        held = {p.name: p.stat().st_size for p in path.parent.iterdir() if p.is_file()}
        raise OSError(err.errno, f"cannot open {path} to fill its disk ({err.strerror}); df: {df!r}; "
                                 f"files: {held}") from err
    with f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
