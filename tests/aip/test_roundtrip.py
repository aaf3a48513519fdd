import shutil, zipfile, io
import pytest
from django.core.management.base import CommandError
from tests.aip.conftest import export_site, packager, repository_wipe, manifest_text, package_bytes, database_snapshot, stored_files
from repository.models import *

def run(*a):
    try:
        packager(*a)
        return "OK"
    except BaseException as e:
        return f"{type(e).__name__}: {e}"

def test_crc(demo, tmp_path, bitstream_storage, capsys):
    p = tmp_path / "i.zip"
    packager("-d", "-i", "123456789/8", str(p))
    data = bytearray(p.read_bytes())
    # find pdf entry data offset
    with zipfile.ZipFile(p) as z:
        info = [i for i in z.infolist() if i.filename.endswith(".pdf")][0]
    off = info.header_offset + 30 + len(info.filename) + len(info.extra) + 20
    data[off] ^= 0xFF
    p.write_bytes(bytes(data))
    print("CRC", run("-r", "-f", str(p)))
    print("SUBMITCOLL")
    q = tmp_path / "c.zip"
    packager("-d", "-i", "123456789/5", str(q))
    adm = Collection.objects.get(handle__handle="123456789/5").admin_group
    print("members before", list(adm.member_groups.all()), list(Collection.objects.get(handle__handle="123456789/5").submitters_group.members.all()))
    print(run("-s", "-p", "123456789/3", str(q)))
    print("members after", list(adm.member_groups.all()), list(Collection.objects.get(handle__handle="123456789/5").submitters_group.members.all()))
    print(Collection.objects.count())
    out = capsys.readouterr()
    open("/tmp/explore/out2.txt", "w").write(out.out + out.err)
