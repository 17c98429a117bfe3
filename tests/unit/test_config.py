"""Typed settings: defaults, conversions, and errors that name the key and the value."""

import pytest

from glance_cache_mw import config, exception


def test_defaults_live_under_data_dir():
    conf = config.Config.from_mapping({})
    assert conf.data_dir == "./data"
    assert conf.sql_connection == "sqlite:///./data/glance-cache-mw.sqlite"
    assert conf.image_cache_dir == "./data/image-cache"
    assert conf.filesystem_store_datadir == "./data/images"
    assert (conf.bind_host, conf.bind_port, conf.image_cache_driver) == ("127.0.0.1", 9292,
                                                                         "sqlite")


def test_derived_paths_follow_data_dir_but_explicit_values_win():
    conf = config.Config.from_mapping({"data_dir": "/srv/gcm", "image_cache_dir": "/fast/c"})
    assert conf.filesystem_store_datadir == "/srv/gcm/images"
    assert conf.image_cache_dir == "/fast/c"


def test_types_are_converted():
    conf = config.Config.from_mapping({"image_cache_max_size": " 1024 ", "debug": "Yes",
                                       "workers": "0"})
    assert conf.image_cache_max_size == 1024
    assert conf.debug is True
    assert conf.workers == 0


@pytest.mark.parametrize("key, raw, words", [
    ("image_cache_max_size", "10G", "is not an integer"),
    ("bind_port", "-1", "must be at least 0"),
    ("debug", "maybe", "is not a boolean"),
    ("cache_prefetcher_workers", "0", "must be at least 1"),
])
def test_bad_values_name_key_and_value(key, raw, words):
    with pytest.raises(exception.InvalidConfiguration) as caught:
        config.Config.from_mapping({key: raw})
    message = str(caught.value)
    assert key in message and repr(raw) in message and words in message


def test_from_file_reads_default_section(tmp_path):
    ini = tmp_path / "x.ini"
    ini.write_text("[DEFAULT]\nimage_cache_stall_time = 60\n\n[app:main]\nuse = egg:x\n")
    assert config.Config.from_file(str(ini)).image_cache_stall_time == 60


def test_missing_and_broken_files_are_clear_errors(tmp_path):
    with pytest.raises(exception.InvalidConfiguration, match="does not exist"):
        config.Config.from_file(str(tmp_path / "nope.ini"))
    broken = tmp_path / "broken.ini"
    broken.write_text("this is not ini\n")
    with pytest.raises(exception.InvalidConfiguration, match="cannot be parsed"):
        config.Config.from_file(str(broken))


def test_every_setting_is_described():
    names = [name for name, _default, help_text in config.describe() if help_text]
    assert names == [setting.name for setting in config.SETTINGS]


def test_ini_values_are_interpolated_like_paste(tmp_path):
    ini = tmp_path / "x.ini"
    ini.write_text("[DEFAULT]\ndata_dir = %(here)s/state\n"
                   "sql_connection = postgresql://u:p%%40ss@127.0.0.1/db\n")
    conf = config.Config.from_file(str(ini))
    assert conf.data_dir == "%s/state" % tmp_path
    assert conf.sql_connection == "postgresql://u:p%40ss@127.0.0.1/db"


def test_a_lone_percent_names_the_key(tmp_path):
    ini = tmp_path / "x.ini"
    ini.write_text("[DEFAULT]\ndata_dir = /srv/50%full\n")
    with pytest.raises(exception.InvalidConfiguration) as caught:
        config.Config.from_file(str(ini))
    assert "data_dir" in str(caught.value) and "%full" in str(caught.value)


@pytest.mark.parametrize("key, value, hidden", [
    ("sql_connection", "postgresql://u:p%40ss@h/db", "40ss"),
    ("cluster_secret", "0123456789abcdef%SECRETTAIL", "SECRETTAIL"),
])
def test_a_lone_percent_in_a_secret_names_the_key_not_the_value(tmp_path, key, value, hidden):
    ini = tmp_path / "x.ini"
    ini.write_text("[DEFAULT]\n%s = %s\n" % (key, value))
    with pytest.raises(exception.InvalidConfiguration) as caught:
        config.Config.from_file(str(ini))
    assert key in str(caught.value) and str(ini) in str(caught.value)
    assert hidden not in str(caught.value)


def test_from_file_rejects_unknown_keys_with_a_suggestion(tmp_path):
    ini = tmp_path / "x.ini"
    ini.write_text("[DEFAULT]\nimage_cache_max_sise = 1000\n")
    with pytest.raises(exception.InvalidConfiguration,
                       match="unknown key image_cache_max_sise .*did you mean "
                             "image_cache_max_size"):
        config.Config.from_file(str(ini))


def test_from_file_allows_interpolation_variables_and_api_keys(tmp_path):
    ini = tmp_path / "x.ini"
    ini.write_text("[DEFAULT]\nroot = /srv\nimage_cache_dir = %(root)s/cache\n"
                   "api_limit_max = 10\nflavor = noauth\n")
    assert config.Config.from_file(str(ini)).image_cache_dir == "/srv/cache"


def test_from_mapping_stays_lenient_for_paste_global_conf():
    # Glance's own paste pipeline hands the filters Glance's keys: they are not ours to judge.
    conf = config.Config.from_mapping({"bind_port": "9292", "enable_v2_api": "true",
                                       "image_cache_dir": "/c"})
    assert conf.image_cache_dir == "/c"


@pytest.mark.parametrize("raw, words", [("65536", "must be at most 65535"),
                                         ("-1", "must be at least 0"), (" ", "is empty")])
def test_bind_port_range_and_empty(raw, words):
    with pytest.raises(exception.InvalidConfiguration, match=words):
        config.Config.from_mapping({"bind_port": raw})


def test_a_directory_is_not_a_config_file(tmp_path):
    with pytest.raises(exception.InvalidConfiguration, match="is a directory"):
        config.Config.from_file(str(tmp_path))


def test_glance_api_conf_is_read_for_our_keys_and_keeps_glances(tmp_path):
    """Our commands pointed at glance-api.conf: Glance's own [DEFAULT] keys are not typos."""
    path = tmp_path / "glance-api.conf"
    path.write_text("[DEFAULT]\nimage_cache_dir = /c\nnode_staging_uri = file:///s\n"
                    "enabled_import_methods = []\n[database]\nconnection = sqlite:////d.db\n"
                    "[glance_store]\nfilesystem_store_datadir = /i\n")
    conf = config.Config.from_file(str(path))
    assert (conf.image_cache_dir, conf.sql_connection) == ("/c", "sqlite:////d.db")
    ours = tmp_path / "ours.ini"                 # the same key in our own INI is a mistake
    ours.write_text("[DEFAULT]\nnode_staging_uri = file:///s\n")
    with pytest.raises(exception.InvalidConfiguration, match="unknown key node_staging_uri"):
        config.Config.from_file(str(ours))


def test_config_is_a_frozen_object_with_one_typed_attribute_per_setting():
    import dataclasses
    conf = config.Config.from_mapping({"workers": "3"})
    assert [field.name for field in dataclasses.fields(conf)] == \
        [setting.name for setting in config.SETTINGS]
    assert "_values" not in vars(conf) and conf.as_dict()["workers"] == 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        conf.workers = 4
    assert dataclasses.replace(conf, workers=4).workers == 4 and conf.workers == 3
    with pytest.raises(AttributeError):
        conf.no_such_setting   # noqa: B018 (the access is the test)
    assert "sqlite:" not in repr(conf)   # a URL may carry a password


def test_the_images_app_limits_are_settings_too():
    conf = config.Config.from_mapping({"image_tag_quota": "-1", "admin_without_context": "on"})
    assert (conf.image_tag_quota, conf.image_member_quota, conf.api_limit_max) == (-1, 128, 1000)
    assert conf.admin_without_context is True


@pytest.mark.parametrize("word, value", [("1", True), (" Yes ", True), ("ON", True),
                                         ("true", True), ("0", False), ("no", False),
                                         ("Off", False), ("FALSE", False)])
def test_settings_and_the_db_api_take_the_same_boolean_words(word, value):
    from glance_cache_mw.db import values
    assert config.Config.from_mapping({"debug": word}).debug is value
    assert values.to_bool("protected", word) is value


def test_a_word_that_is_no_boolean_names_the_key_everywhere():
    from glance_cache_mw.db import values
    with pytest.raises(exception.InvalidConfiguration, match="debug='maybe'"):
        config.Config.from_mapping({"debug": "maybe"})
    with pytest.raises(exception.Invalid, match="protected='maybe'"):
        values.to_bool("protected", "maybe")
