#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""lazyfs: a FUSE file system for power-loss tests, in the manner of Jepsen's
LazyFS (written here in our own words).

It passes everything through to a backing directory, except that it keeps
what a power cut would lose:

- File data. The backing file always holds the *durable* content: what the
  last fsync/fdatasync of that file left there, plus every write made through
  a descriptor opened with O_SYNC or O_DSYNC. Writes not yet durable live in
  memory, as whole 4 KiB pages that hold the current content of the page
  (the "overlay"); reads see the overlay on top of the backing file, as a
  page cache would. The size is kept the same way (a size in memory, and the
  lowest size a truncate took the file to since its last sync). fsync or
  fdatasync of a file writes its overlay into the backing file; nothing else
  does (there is no background writeback: the most pessimistic disk). The
  kernel follows every write through an O_SYNC/O_DSYNC descriptor with an
  fsync of the whole file on that descriptor (FUSE's fsync has no range);
  such an fsync is taken as the write's own and makes nothing else durable,
  so a write with O_DSYNC makes only its own bytes durable, as on a disk. (A
  program that itself fsyncs an O_DSYNC descriptor is thereby under-synced
  here, a false alarm rather than a missed bug; LMDB never does.)
- Directory entries. create, mkdir, mknod, symlink, link, unlink, rmdir and
  rename change the backing directory at once, and each is written into a
  journal with what undoes it (an unlinked or overwritten entry is kept in a
  graveyard beside the exported tree). An entry becomes durable when every
  directory it touched (both, for a rename) has been fsynced after it; the
  fsync of a file does not make its name durable (POSIX; LazyFS does the same).

On "powerloss" it drops every overlay and undoes, newest first, every journal
entry not yet durable: the backing directory is then exactly what a machine
that lost power at that instant would find. From then on every operation
fails with EIO, until the test unmounts; the next mount starts afresh from
the backing directory.

Why an undo journal for names and a redo overlay for data: data is what
LMDB writes thousands of times a second, and keeping it in memory until its
fsync makes the power cut a no-op for data (nothing to roll back); names
change rarely, and changing them in the backing directory at once lets every
lookup, readdir and stat pass straight through. What a power cut leaves is the
same as with a redo overlay for both.

Shared writable mmaps (LMDB's lock file) reach a FUSE file system as
ordinary writes when the kernel writes the dirty pages back. They are
treated like any other write: durable only after an fsync of that file. LMDB
never fsyncs its lock file, so a power cut restores the lock file that was
last made durable (usually an empty or stale one): the semantics of a lock
file on /dev/shm after a reboot, which LMDB handles by rebuilding the lock
table when it is the first to open the environment. Attribute changes
(chmod, chown, utimens) pass straight through and are not modelled.

Reads never use the descriptor the kernel passes with the request: LMDB opens
its data file a second time O_WRONLY|O_DSYNC, and the kernel may serve a page
fault of LMDB's read-only map with that handle. Every file is read and written
through one O_RDWR descriptor of this file system's own.

Control: a Unix stream socket (--control PATH) takes one command per line and
answers one JSON line: "powerloss" (lose power now), "sync" (make everything
durable: what the kernel's writeback does after a quiet minute), "stats"
(operation counters), "ping".

Usage: lazyfs.py BACKING MOUNTPOINT --control SOCKET [--debug]
BACKING holds the exported tree in BACKING/root and the graveyard in
BACKING/grave (both created if missing). Runs in the foreground until
unmounted (umount MOUNTPOINT) or SIGTERM."""

import argparse
import errno
import faulthandler
import json
import os
import shutil
import signal
import socket
import stat
import sys
import threading
import time

from fusepy import FUSE, FuseOSError, Operations

PAGE = 4096
ZERO_PAGE = bytes(PAGE)


class Inode:
    """The state of one regular file (by backing inode number)."""

    __slots__ = ('ino', 'fd', 'size', 'durable_size', 'low', 'pages', 'name')

    def __init__(self, ino, fd, name):
        self.ino = ino
        self.fd = fd                  # O_RDWR on the backing file, ours
        self.name = name              # the path it was first opened by (stats only)
        st = os.fstat(fd)
        self.durable_size = st.st_size    # the backing file's size
        self.size = st.st_size            # the size the file system shows
        self.low = st.st_size             # backing bytes at or past this are not visible
        self.pages = {}                   # page index -> bytearray(PAGE): written, not durable

    def dirty(self):
        return bool(self.pages) or self.size != self.durable_size or self.low != self.durable_size


class Handle:
    __slots__ = ('inode', 'sync')

    def __init__(self, inode, sync):
        self.inode = inode
        self.sync = sync              # opened O_SYNC or O_DSYNC: every write is durable


class Entry:
    """One change of a directory, with what undoes it."""

    __slots__ = ('what', 'dirs', 'undo', 'durable_then')

    def __init__(self, what, dirs, undo, durable_then=None):
        self.what = what
        self.dirs = set(dirs)         # directories still to be fsynced for it to be durable
        self.undo = undo              # callable: restores the backing directory
        self.durable_then = durable_then   # callable: once durable (drops a graveyard entry)


def parent_of(path):
    return os.path.dirname(path.rstrip('/')) or '/'


class LazyFS(Operations):
    use_ns = True

    def __init__(self, backing):
        self.root = os.path.realpath(os.path.join(backing, 'root'))
        self.grave = os.path.realpath(os.path.join(backing, 'grave'))
        os.makedirs(self.root, exist_ok=True)
        shutil.rmtree(self.grave, ignore_errors=True)
        os.makedirs(self.grave)
        self.mutex = threading.Lock()
        self.dead = False
        self.inodes = {}              # st_ino -> Inode
        self.handles = {}             # fh -> Handle
        self.next_fh = 1
        self.next_grave = 1
        self.journal = []
        self.stats = dict.fromkeys(('writes', 'write_bytes', 'sync_writes', 'fsyncs',
                                    'fsync_pages', 'sync_handle_fsyncs', 'fsyncdirs', 'reads',
                                    'dir_changes', 'powerloss_pages_lost',
                                    'powerloss_entries_undone', 'powerloss_undo_errors'), 0)
        self.fsyncs_by_file = {}

    # ---- dispatch: one lock, and EIO for everything once the power is gone

    def __call__(self, op, *args):
        with self.mutex:
            if self.dead and op not in ('destroy', 'init', 'release', 'releasedir'):
                raise FuseOSError(errno.EIO)
            fn = getattr(self, op, None)
            if fn is None:
                raise FuseOSError(errno.ENOSYS)
            return fn(*args)

    def b(self, path):
        return self.root + path

    # ---- files and their overlay

    def inode_for_fd(self, fd, path):
        """The Inode of the backing file open as fd (which becomes ours or is
        closed when the inode already has a descriptor)."""
        ino = os.fstat(fd).st_ino
        inode = self.inodes.get(ino)
        if inode is None:
            inode = Inode(ino, fd, path)
            self.inodes[ino] = inode
        else:
            os.close(fd)
        return inode

    def inode_for_path(self, path):
        st = os.lstat(self.b(path))
        inode = self.inodes.get(st.st_ino)
        if inode is None:
            inode = self.inode_for_fd(os.open(self.b(path), os.O_RDWR | os.O_CLOEXEC), path)
        return inode

    def backing_read(self, inode, start, end):
        """The current content of [start, end) where no overlay page covers it."""
        visible = min(end, inode.low)
        data = os.pread(inode.fd, visible - start, start) if visible > start else b''
        if len(data) < end - start:
            data += bytes(end - start - len(data))
        return data

    def read_range(self, inode, off, size):
        end = min(off + size, inode.size)
        if off >= end:
            return b''
        if not inode.pages:
            return self.backing_read(inode, off, end)
        out = []
        pos = off
        while pos < end:
            pg = pos // PAGE
            base = pg * PAGE
            page = inode.pages.get(pg)
            if page is not None:
                stop = min(end, base + PAGE)
                out.append(bytes(page[pos - base:stop - base]))
                pos = stop
                continue
            stop = min(end, base + PAGE)
            while stop < end and (stop // PAGE) not in inode.pages:
                stop = min(end, stop + PAGE)
            out.append(self.backing_read(inode, pos, stop))
            pos = stop
        return b''.join(out)

    def page_now(self, inode, pg):
        """Page pg of the current content (zeros past the end), for modifying."""
        data = self.read_range(inode, pg * PAGE, PAGE)
        return bytearray(data + bytes(PAGE - len(data)))

    def write_range(self, inode, data, off, sync):
        end = off + len(data)
        mv = memoryview(data)
        pos = off
        while pos < end:
            pg = pos // PAGE
            base = pg * PAGE
            stop = min(end, base + PAGE)
            page = inode.pages.get(pg)
            if page is None:
                if pos == base and stop == base + PAGE:
                    page = bytearray(mv[pos - off:stop - off])
                else:
                    page = self.page_now(inode, pg)
                    page[pos - base:stop - base] = mv[pos - off:stop - off]
                inode.pages[pg] = page
            else:
                page[pos - base:stop - base] = mv[pos - off:stop - off]
            pos = stop
        inode.size = max(inode.size, end)
        if sync:
            # Only this write becomes durable: its bytes go to the backing
            # file (which grows with a hole if need be); earlier writes that
            # are not durable stay in the overlay.
            os.pwrite(inode.fd, data, off)
            inode.durable_size = max(inode.durable_size, end)
            self.stats['sync_writes'] += 1

    def truncate_to(self, inode, length):
        if length < inode.size:
            first_gone = (length + PAGE - 1) // PAGE
            for pg in [p for p in inode.pages if p >= first_gone]:
                del inode.pages[pg]
            if length % PAGE:
                pg = length // PAGE
                page = inode.pages.get(pg)
                if page is None:
                    page = self.page_now(inode, pg)
                    inode.pages[pg] = page
                page[length % PAGE:] = bytes(PAGE - length % PAGE)
            inode.low = min(inode.low, length)
        inode.size = length

    def make_durable(self, inode):
        """fsync: the overlay goes into the backing file."""
        if inode.low < inode.durable_size:
            os.ftruncate(inode.fd, inode.low)
        pages = sorted(inode.pages)
        i = 0
        while i < len(pages):
            j = i
            while j + 1 < len(pages) and pages[j + 1] == pages[j] + 1:
                j += 1
            start = pages[i] * PAGE
            if start < inode.size:
                data = b''.join(inode.pages[p] for p in pages[i:j + 1])
                os.pwrite(inode.fd, data[:inode.size - start], start)
            i = j + 1
        if os.fstat(inode.fd).st_size != inode.size:
            os.ftruncate(inode.fd, inode.size)
        self.stats['fsync_pages'] += len(pages)
        inode.pages = {}
        inode.durable_size = inode.low = inode.size

    # ---- directory journal

    def to_grave(self, bpath):
        g = os.path.join(self.grave, str(self.next_grave))
        self.next_grave += 1
        os.rename(bpath, g)
        return g

    @staticmethod
    def remove_any(p):
        if os.path.isdir(p) and not os.path.islink(p):
            shutil.rmtree(p)
        else:
            os.unlink(p)

    def journal_add(self, what, dirs, undo, durable_then=None):
        self.journal.append(Entry(what, dirs, undo, durable_then))
        self.stats['dir_changes'] += 1

    def created(self, path, what):
        bp = self.b(path)
        self.journal_add(f'{what} {path}', [parent_of(path)], lambda: self.remove_any(bp))

    # ---- control (called from the control thread)

    def power_loss(self):
        with self.mutex:
            if self.dead:
                return {'ok': True, 'already': True}
            self.dead = True
            for inode in self.inodes.values():
                self.stats['powerloss_pages_lost'] += len(inode.pages)
                os.close(inode.fd)
            self.inodes = {}
            self.handles = {}
            undone = []
            for e in reversed(self.journal):
                if e.dirs:
                    try:
                        e.undo()
                        undone.append(e.what)
                    except OSError as ex:
                        self.stats['powerloss_undo_errors'] += 1
                        undone.append(f'{e.what} (undo failed: {ex})')
            self.stats['powerloss_entries_undone'] = len(undone)
            self.journal = []
            shutil.rmtree(self.grave, ignore_errors=True)
            return {'ok': True, 'undone': undone, 'stats': self.stats,
                    'fsyncs_by_file': self.fsyncs_by_file}

    def sync_all(self):
        with self.mutex:
            if self.dead:
                return {'ok': False, 'error': 'the power is off'}
            for inode in self.inodes.values():
                self.make_durable(inode)
            for e in self.journal:
                e.dirs.clear()
                if e.durable_then:
                    e.durable_then()
            self.journal = []
            return {'ok': True}

    def get_stats(self):
        with self.mutex:
            return {'ok': True, 'stats': dict(self.stats), 'fsyncs_by_file':
                    dict(self.fsyncs_by_file), 'dead': self.dead,
                    'journal': [(e.what, sorted(e.dirs)) for e in self.journal]}

    # ---- operations

    def getattr(self, path, fh=None):
        if fh is not None:
            h = self.handles.get(fh.fh)
            st = os.fstat(h.inode.fd) if h else os.lstat(self.b(path))
        else:
            st = os.lstat(self.b(path))
        d = {k: getattr(st, k) for k in ('st_mode', 'st_nlink', 'st_uid', 'st_gid',
                                         'st_atime_ns', 'st_mtime_ns', 'st_ctime_ns',
                                         'st_size', 'st_ino')}
        d['st_atime'] = d.pop('st_atime_ns')
        d['st_mtime'] = d.pop('st_mtime_ns')
        d['st_ctime'] = d.pop('st_ctime_ns')
        if stat.S_ISREG(st.st_mode):
            inode = self.inodes.get(st.st_ino)
            if inode is not None:
                d['st_size'] = inode.size
        d['st_blocks'] = (d['st_size'] + 511) // 512
        return d

    def access(self, path, amode):
        if not os.access(self.b(path), amode):
            raise FuseOSError(errno.EACCES)

    def readdir(self, path, fh):
        return ['.', '..'] + os.listdir(self.b(path))

    def readlink(self, path):
        return os.readlink(self.b(path))

    def statfs(self, path):
        sv = os.statvfs(self.b(path))
        return {k: getattr(sv, k) for k in ('f_bavail', 'f_bfree', 'f_blocks', 'f_bsize',
                                            'f_favail', 'f_ffree', 'f_files', 'f_flag',
                                            'f_frsize', 'f_namemax')}

    def chmod(self, path, mode):
        os.chmod(self.b(path), mode)

    def chown(self, path, uid, gid):
        os.lchown(self.b(path), uid, gid)

    def utimens(self, path, times=None):
        os.utime(self.b(path), ns=times, follow_symlinks=False) if times else \
            os.utime(self.b(path), follow_symlinks=False)

    def new_handle(self, inode, flags):
        fh = self.next_fh
        self.next_fh += 1
        self.handles[fh] = Handle(inode, bool(flags & os.O_DSYNC))
        return fh

    def open(self, path, fi):
        inode = self.inode_for_path(path)
        if fi.flags & os.O_TRUNC:
            self.truncate_to(inode, 0)
        fi.fh = self.new_handle(inode, fi.flags)
        return 0

    def create(self, path, mode, fi):
        bp = self.b(path)
        existed = os.path.lexists(bp)
        fd = os.open(bp, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | (fi.flags & os.O_EXCL), mode)
        if not existed:
            self.created(path, 'create')
        inode = self.inode_for_fd(fd, path)
        if existed and fi.flags & os.O_TRUNC:
            self.truncate_to(inode, 0)
        fi.fh = self.new_handle(inode, fi.flags)
        return 0

    def release(self, path, fi):
        self.handles.pop(fi.fh, None)
        return 0

    def flush(self, path, fi):
        return 0

    def read(self, path, size, offset, fi):
        self.stats['reads'] += 1
        return self.read_range(self.handles[fi.fh].inode, offset, size)

    def write(self, path, data, offset, fi):
        h = self.handles[fi.fh]
        self.stats['writes'] += 1
        self.stats['write_bytes'] += len(data)
        self.write_range(h.inode, data, offset, h.sync)
        return len(data)

    def truncate(self, path, length, fi=None):
        if fi is not None and fi.fh in self.handles:
            inode = self.handles[fi.fh].inode
        else:
            inode = self.inode_for_path(path)
        self.truncate_to(inode, length)

    def fsync(self, path, datasync, fi):
        h = self.handles[fi.fh]
        if h.sync:
            # The kernel's own: after each write through an O_SYNC/O_DSYNC
            # descriptor it fsyncs that file (generic_write_sync; FUSE's fsync
            # has no range). The write is durable already, and the file's
            # other writes must not become durable with it.
            self.stats['sync_handle_fsyncs'] += 1
            return 0
        inode = h.inode
        self.stats['fsyncs'] += 1
        self.fsyncs_by_file[inode.name] = self.fsyncs_by_file.get(inode.name, 0) + 1
        self.make_durable(inode)
        return 0

    def fsyncdir(self, path, datasync, fh):
        self.stats['fsyncdirs'] += 1
        d = path.rstrip('/') or '/'
        still = []
        for e in self.journal:
            e.dirs.discard(d)
            if e.dirs:
                still.append(e)
            elif e.durable_then:
                e.durable_then()
        self.journal = still
        return 0

    def mkdir(self, path, mode):
        os.mkdir(self.b(path), mode)
        self.created(path, 'mkdir')

    def mknod(self, path, mode, dev):
        os.mknod(self.b(path), mode, dev)
        self.created(path, 'mknod')

    def symlink(self, target, source):
        # fusepy: target is the new link's path, source what it points to
        os.symlink(source, self.b(target))
        self.created(target, 'symlink')

    def link(self, target, source):
        os.link(self.b(source), self.b(target))
        self.created(target, 'link')

    def unlink(self, path):
        bp = self.b(path)
        g = self.to_grave(bp)
        self.journal_add(f'unlink {path}', [parent_of(path)],
                         lambda: os.rename(g, bp), lambda: self.remove_any(g))

    def rmdir(self, path):
        bp = self.b(path)
        if os.listdir(bp):
            raise FuseOSError(errno.ENOTEMPTY)
        g = self.to_grave(bp)
        self.journal_add(f'rmdir {path}', [parent_of(path)],
                         lambda: os.rename(g, bp), lambda: self.remove_any(g))

    def rename(self, old, new):
        bold, bnew = self.b(old), self.b(new)
        os.lstat(bold)
        displaced = None
        if os.path.lexists(bnew):
            if os.path.isdir(bnew) and not os.path.islink(bnew) and os.listdir(bnew):
                raise FuseOSError(errno.ENOTEMPTY)
            displaced = self.to_grave(bnew)
        try:
            os.rename(bold, bnew)
        except OSError:
            if displaced:
                os.rename(displaced, bnew)
            raise

        def undo():
            os.rename(bnew, bold)
            if displaced:
                os.rename(displaced, bnew)

        def durable_then():
            if displaced:
                self.remove_any(displaced)

        self.journal_add(f'rename {old} {new}', [parent_of(old), parent_of(new)], undo,
                         durable_then)


def serve_control(fs, path):
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(8)

    def client(c):
        with c, c.makefile('rwb') as f:
            for line in f:
                cmd = line.decode().strip()
                if cmd == 'powerloss':
                    ans = fs.power_loss()
                elif cmd == 'sync':
                    ans = fs.sync_all()
                elif cmd == 'stats':
                    ans = fs.get_stats()
                elif cmd == 'ping':
                    ans = {'ok': True}
                else:
                    ans = {'ok': False, 'error': f'unknown command {cmd!r}'}
                f.write(json.dumps(ans).encode() + b'\n')
                f.flush()

    def loop():
        while True:
            c, _ = srv.accept()
            threading.Thread(target=client, args=(c,), daemon=True).start()

    threading.Thread(target=loop, daemon=True).start()


_private_ns = False


def private_mount_namespace():
    """Moves the calling thread (and so every process it starts afterwards)
    into a mount namespace of its own, once per process. Without it, anyone
    on the machine who runs `unshare --mount` while a lazyfs is mounted gets a
    copy of the mount that our umount does not reach: the kernel then keeps
    the FUSE connection and lazyfs never learns that it was unmounted. Our
    mounts also vanish by themselves when the test process ends. Needs root
    (as mounting FUSE here does)."""
    global _private_ns
    if _private_ns:
        return
    import ctypes
    import subprocess
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(0x00020000) != 0:                 # CLONE_NEWNS
        e = ctypes.get_errno()
        raise OSError(e, f'unshare(CLONE_NEWNS): {os.strerror(e)}')
    # our mounts must not propagate back into the namespace we came from
    subprocess.run(['mount', '--make-rprivate', '/'], check=True)
    _private_ns = True


class Mount:
    """Test side: runs lazyfs.py on BACKING at MOUNTPOINT in a child process
    and talks to its control socket. mount() waits until the mount answers;
    unmount() unmounts and waits for the process (lazily if it must)."""

    def __init__(self, backing, mountpoint, control, log_path):
        self.backing, self.mountpoint, self.control = backing, mountpoint, control
        self.log_path = log_path
        self.proc = None
        self.mounts = 0
        os.makedirs(os.path.join(backing, 'root'), exist_ok=True)
        os.makedirs(mountpoint, exist_ok=True)
        private_mount_namespace()

    @property
    def root(self):
        """The exported tree in the backing directory (what survives)."""
        return os.path.join(self.backing, 'root')

    def mount(self, timeout=15.0):
        import subprocess
        assert self.proc is None, 'already mounted'
        assert os.path.exists('/dev/fuse'), '/dev/fuse is missing: power-loss tests need FUSE'
        self.mounts += 1
        log = open(self.log_path, 'ab')
        try:
            self.proc = subprocess.Popen(
                [sys.executable, os.path.abspath(__file__), self.backing, self.mountpoint,
                 '--control', self.control],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        finally:
            log.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.proc = None
                raise AssertionError(f'lazyfs exited at mount:\n{self.log_text()}')
            if os.path.ismount(self.mountpoint):
                try:
                    if self.command('ping').get('ok'):
                        return
                except OSError:
                    pass
            time.sleep(0.02)
        raise AssertionError(f'lazyfs did not mount in {timeout} s:\n{self.log_text()}')

    def command(self, cmd, timeout=30.0):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(self.control)
            s.sendall(cmd.encode() + b'\n')
            with s.makefile('rb') as f:
                line = f.readline()
        if not line:
            raise OSError(f'lazyfs: no answer to {cmd!r}')
        return json.loads(line)

    def power_loss(self):
        ans = self.command('powerloss')
        assert ans.get('ok'), f'powerloss: {ans}'
        return ans

    def sync(self):
        ans = self.command('sync')
        assert ans.get('ok'), f'sync: {ans}'
        return ans

    def stats(self):
        return self.command('stats')

    def unmount(self, timeout=15.0):
        import subprocess
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        r = subprocess.run(['umount', self.mountpoint], capture_output=True, text=True)
        if r.returncode != 0:
            subprocess.run(['umount', '-l', self.mountpoint], capture_output=True)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGUSR1)     # its threads' stacks into the log
            time.sleep(1)
            proc.kill()
            proc.wait()
            raise AssertionError(f'lazyfs did not exit after umount ({r.stderr.strip()}):\n'
                                 + self.log_text())
        assert r.returncode == 0, f'umount {self.mountpoint}: {r.stderr.strip()}'

    def cleanup(self):
        """For a fixture's end: never leaves a mount behind."""
        try:
            self.unmount()
        except AssertionError:
            pass
        if os.path.ismount(self.mountpoint):
            import subprocess
            subprocess.run(['umount', '-l', self.mountpoint], capture_output=True)

    def log_text(self):
        try:
            with open(self.log_path, 'rb') as f:
                return f.read().decode('utf-8', 'replace')
        except OSError:
            return ''


def main():
    ap = argparse.ArgumentParser(description='FUSE file system that loses un-synced writes '
                                 'on command (power-loss tests)')
    ap.add_argument('backing')
    ap.add_argument('mountpoint')
    ap.add_argument('--control', required=True, help='Unix socket for commands')
    ap.add_argument('--debug', action='store_true')
    a = ap.parse_args()
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    fs = LazyFS(a.backing)
    serve_control(fs, a.control)
    print(f'lazyfs: {fs.root} on {a.mountpoint}, control {a.control}', file=sys.stderr,
          flush=True)
    t0 = time.monotonic()
    FUSE(fs, a.mountpoint, raw_fi=True, foreground=True, nothreads=False, debug=a.debug,
         big_writes=True, max_write=131072, max_read=131072, hard_remove=True,
         fsname='lazyfs', subtype='lazyfs', default_permissions=False)
    print(f'lazyfs: unmounted after {time.monotonic() - t0:.1f} s; {json.dumps(fs.stats)}',
          file=sys.stderr, flush=True)


if __name__ == '__main__':
    main()
