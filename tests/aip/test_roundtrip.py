import shutil
from tests.aip.conftest import export_site, packager, repository_wipe, manifest_text, package_bytes

def test_explore(demo, tmp_path, bitstream_storage, capsys):
    first = tmp_path / "one"
    export_site(first)
    for p in sorted(first.iterdir()):
        print(p.name, p.stat().st_size)
    shutil.copytree(first, "/tmp/explore/one", dirs_exist_ok=True)
    repository_wipe()
    shutil.rmtree(bitstream_storage); bitstream_storage.mkdir()
    packager("-r", "-a", "-f", "-u", "-i", "123456789/0", str(first / "SITE@123456789-0.zip"))
    second = tmp_path / "two"
    export_site(second)
    a, b = package_bytes(first), package_bytes(second)
    print(sorted(a) == sorted(b), [n for n in a if a[n] != b.get(n)])
    out = capsys.readouterr()
    open("/tmp/explore/out.txt", "w").write(out.out + out.err)
