"""The disk stage's decisions before bootc-image-builder runs: types, outputs, and the build config."""

import tomllib

import pytest

from ansible_collections.rhoim.inference.plugins.module_utils import disk_image
from ansible_collections.rhoim.inference.plugins.module_utils.disk_image import DiskImageError

DIGEST = "sha256:" + "ab" * 32
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIM2e2mMb8YxgDmWvQmjJ4hd9GzY8X2x3nXVbQh6N1Q7e ops@example"


def refused(*words, **kwargs):
    with pytest.raises(DiskImageError) as err:
        disk_image.build_config(**kwargs)
    for word in words:
        assert word in err.value.msg, err.value.msg
    return err.value.msg


def test_types_are_checked_against_what_the_builder_builds():
    assert disk_image.check_types(["qcow2", "raw", "ami"]) == ["qcow2", "raw", "ami"]
    for types, words in ((["qcow3"], ["qcow3", "known: ami"]), ([], ["empty"]), (["qcow2", "qcow2"], ["more than once"]),
                         (["qcow2", "anaconda-iso"], ["mixes", "qcow2", "anaconda-iso", "twice"])):
        with pytest.raises(DiskImageError) as err:
            disk_image.check_types(types)
        for word in words:
            assert word in err.value.msg


def test_raw_and_ami_share_an_output_but_not_an_artifact():
    assert disk_image.output_path("raw") == disk_image.output_path("ami") == "image/disk.raw"
    raw, ami = disk_image.artifact_path(DIGEST, "raw"), disk_image.artifact_path(DIGEST, "ami")
    assert raw != ami and raw.startswith("sha256-" + "ab" * 32 + "/raw/")
    assert disk_image.artifact_path(DIGEST, "anaconda-iso").endswith("/anaconda-iso/install.iso")
    with pytest.raises(DiskImageError):
        disk_image.artifact_path("latest", "qcow2")


def test_the_config_carries_users_filesystems_and_kernel_arguments_with_a_warning():
    config, warnings = disk_image.build_config(
        ["qcow2"], users=[{"name": "ops", "key": KEY + "\n", "groups": ["wheel"]}],
        filesystems=[{"mountpoint": "/", "minsize": "20 GiB"}, {"mountpoint": "/var/lib/rhoim", "minsize": 107374182400}],
        kernel_append="console=ttyS0")
    assert config == {"customizations": {
        "user": [{"name": "ops", "key": KEY, "groups": ["wheel"]}],
        "filesystem": [{"mountpoint": "/", "minsize": "20 GiB"}, {"mountpoint": "/var/lib/rhoim", "minsize": 107374182400}],
        "kernel": {"append": "console=ttyS0"}}}
    assert warnings == [disk_image.KARGS_WARNING] and "kargs.d" in warnings[0]
    text = disk_image.to_toml(config)
    assert tomllib.loads(text) == config
    assert "[[customizations.user]]" in text and "[customizations.kernel]" in text
    assert disk_image.build_config(["qcow2"])[1] == []


def test_an_installer_kickstart_survives_toml_exactly():
    kickstart = 'text\nzerombr\nclearpart --all --initlabel\nautopart\n%post\necho "tab\there \\ ok é"\n%end\n'
    config, _warnings = disk_image.build_config(["anaconda-iso"], kickstart=kickstart)
    parsed = tomllib.loads(disk_image.to_toml(config))
    assert parsed["customizations"]["installer"]["kickstart"]["contents"] == kickstart
    assert disk_image.config_hash(disk_image.to_toml(config)) == disk_image.config_hash(disk_image.to_toml(config))
    other, _warnings = disk_image.build_config(["anaconda-iso"], kickstart=kickstart + "reboot\n")
    assert disk_image.config_hash(disk_image.to_toml(other)) != disk_image.config_hash(disk_image.to_toml(config))


def test_what_the_builder_or_the_fleet_cannot_take_is_refused_by_name():
    refused("disk_image_users[0]", "password", "SSH public keys", types=["qcow2"], users=[{"name": "ops", "password": "x"}])
    refused("private key", types=["qcow2"], users=[{"name": "ops", "key": "-----BEGIN OPENSSH PRIVATE KEY-----\nb3Bl"}])
    refused("not an SSH public key", types=["qcow2"], users=[{"name": "ops", "key": "hello"}])
    refused("not a user name", types=["qcow2"], users=[{"name": "Ops Team"}])
    refused("uid", types=["qcow2"], users=[{"name": "ops", "uid": 1000}])
    refused("'/var'", "not /var itself", types=["qcow2"], filesystems=[{"mountpoint": "/var", "minsize": "10 GiB"}])
    refused("'/opt'", types=["qcow2"], filesystems=[{"mountpoint": "/opt", "minsize": "10 GiB"}])
    refused("minsize", "ten", types=["qcow2"], filesystems=[{"mountpoint": "/", "minsize": "ten"}])
    refused("installer types", "qcow2", types=["qcow2"], kickstart="text\n")
    refused("cannot be combined", types=["anaconda-iso"], kickstart="text\n", users=[{"name": "ops", "key": KEY}])
    refused("ostreecontainer", types=["anaconda-iso"], kickstart="ostreecontainer --url quay.io/x\n")
    refused("disk types", types=["anaconda-iso"], filesystems=[{"mountpoint": "/", "minsize": "10 GiB"}])
