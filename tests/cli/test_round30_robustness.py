

# ---- 6. a full disk names the file ------------------------------------------------------------------------------
def test_a_write_that_fails_without_a_file_name_names_its_file(cli, tmp_path, monkeypatch):
    """A full disk's ENOSPC from a write carries no file name: a sweep said "cannot write output: No space left on
    device" (measured on a 64 KiB tmpfs). The atomic writer names the file it was writing."""
    import errno

    from simcluster.core import outputs

    def full(self, *_args, **_kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(Path, "write_text", full)
    with pytest.raises(OSError) as failed:
        outputs.write_text(tmp_path / "results.csv", "a,b\n")
    assert failed.value.filename == str(tmp_path / "results.csv") and failed.value.errno == errno.ENOSPC
    assert list(tmp_path.iterdir()) == []  # no temporary file left
