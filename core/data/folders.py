"""The images of an image folder (`folder:PATH`, one sub-folder per class), listed by a walk that ends.

torchvision's ImageFolder walks with `os.walk(followlinks=True)`, which follows every link at every level: one
loop `a/loop -> .` listed 20 images as 420 samples (copies landing in both train and val), and two loops never
finished. This walk, in the same order and with the same classes and extensions as ImageFolder:
- does not follow a link that leads back into the tree (what it points at is listed under its real path), and
  enters each real folder, by (device, inode), once, so a loop outside the tree ends too;
- lists each file, by (device, inode), once: the first class and folder in sorted order that reach it keep it,
  so no image is listed twice or lands in two splits (symlinks and hard links included);
- stops with one `FolderError` line after MAX_FOLDER_ENTRIES entries or MAX_WALK_SECONDS seconds.
Like ImageFolder it lists every non-folder entry with an image extension, and refuses a class with no images.
"""
from __future__ import annotations

import os
import time

__all__ = ["FolderError", "IMAGE_EXTENSIONS", "MAX_FOLDER_ENTRIES", "MAX_WALK_SECONDS", "list_folder"]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")  # ImageFolder's
MAX_FOLDER_ENTRIES = 1_000_000  # files and folders looked at: 17x ImageNet-1k's validation set, far past a demo
MAX_WALK_SECONDS = 60.0  # a local folder of MAX_FOLDER_ENTRIES lists in seconds; past this, a slow or looping mount


class FolderError(ValueError):
    """An image folder that is no dataset (no classes, an empty class) or too large or slow to list; one line."""


class _Walk:
    """One walk's bounds and what it has seen: real folders entered and files listed, both by (device, inode)."""

    def __init__(self, root: str):
        self.root = os.path.realpath(root)
        self.deadline = time.monotonic() + MAX_WALK_SECONDS
        self.entries = 0
        self.folders_seen: set[tuple[int, int]] = set()
        self.files_seen: set[tuple[int, int]] = set()

    def count(self) -> None:
        """One more entry looked at; FolderError past either bound."""
        self.entries += 1
        if self.entries > MAX_FOLDER_ENTRIES:
            raise FolderError(f"more than {MAX_FOLDER_ENTRIES:,} files and folders under it; use a smaller folder")
        if time.monotonic() > self.deadline:
            raise FolderError(f"listing it took more than {MAX_WALK_SECONDS:g} s (a slow or looping file system?);"
                                  " use a smaller or local folder")

    def first_time(self, key: tuple[int, int], seen: set[tuple[int, int]]) -> bool:
        if key in seen:
            return False
        seen.add(key)
        return True

    def enters(self, path: str) -> bool:
        """Whether the walk goes into the folder at `path`: not through a link back into the tree, each real
        folder once."""
        if os.path.islink(path):
            target = os.path.realpath(path)
            if os.path.commonpath([self.root, target]) == self.root:
                return False
        try:
            status = os.stat(path)
        except OSError:
            return False
        return self.first_time((status.st_dev, status.st_ino), self.folders_seen)

    def lists(self, entry: os.DirEntry) -> bool:
        """Whether `entry` is an image file not listed before."""
        if not entry.name.lower().endswith(IMAGE_EXTENSIONS):
            return False
        try:
            status = entry.stat()
        except OSError:  # a dangling link
            return False
        return self.first_time((status.st_dev, status.st_ino), self.files_seen)

    def folder(self, path: str) -> tuple[list[str], list[str]]:
        """(image files, sub-folders to enter) directly in the folder at `path`; an unreadable one has none."""
        files, folders = [], []
        try:
            with os.scandir(path) as entries:
                for entry in entries:
                    self.count()
                    if entry.is_dir():
                        if self.enters(entry.path):
                            folders.append(entry.path)
                    elif self.lists(entry):
                        files.append(entry.path)
        except OSError:  # unreadable: it lists what it gave so far, as os.walk skips such a folder
            pass
        return sorted(files), folders

    def tree(self, top: str) -> list[str]:
        """The image files under `top`, folders in sorted path order (as ImageFolder's sorted(os.walk(...)))."""
        if not self.enters(top):
            return []
        found, pending = [], [top]
        while pending:
            path = pending.pop()
            files, folders = self.folder(path)
            found.append((path, files))
            pending.extend(folders)
        return [file for _, files in sorted(found) for file in files]


def _classes(walk: _Walk, root: str) -> list[str]:
    """The class names: the sub-folders of `root` (links followed), sorted, as ImageFolder numbers them."""
    names = []
    with os.scandir(root) as entries:
        for entry in entries:
            walk.count()
            if entry.is_dir():
                names.append(entry.name)
    if not names:
        raise FolderError("no class folders in it (it needs one sub-folder of images per class)")
    return sorted(names)


def list_folder(root: str) -> tuple[list[str], list[tuple[str, int]]]:
    """(class names, (path, class index) of every image under each class folder), each file once (see the module
    docstring). FolderError when a class has no image or a bound is passed; OSError when `root` cannot be read."""
    walk = _Walk(root)
    classes = _classes(walk, root)
    samples = [(path, index) for index, name in enumerate(classes) for path in walk.tree(os.path.join(root, name))]
    empty = sorted(set(classes) - {classes[index] for _, index in samples})
    if empty:
        raise FolderError(f"no images in class folder{'s' if len(empty) > 1 else ''} {', '.join(empty)} "
                          f"(looked for {', '.join(IMAGE_EXTENSIONS)}; links back into the folder are not followed)")
    return classes, samples
