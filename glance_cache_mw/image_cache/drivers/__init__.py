"""Cache drivers by name: ``load_driver("sqlite" | "xattr" | "centralized_db", config)``.

An unknown name, a driver that cannot be imported or one that fails to configure is a
``BadDriverConfiguration`` with the reason: never a silent fallback to another driver (W20).
"""

import importlib
import logging

from glance_cache_mw import exception

LOG = logging.getLogger(__name__)

# name -> (module, class names to try in order)
DRIVERS = {
    "sqlite": ("glance_cache_mw.image_cache.drivers.sqlite", ("Driver",)),
    "xattr": ("glance_cache_mw.image_cache.drivers.xattr", ("Driver",)),
    "centralized_db": ("glance_cache_mw.image_cache.drivers.centralized_db",
                       ("Driver", "CentralizedDbDriver")),
}


def get_driver_class(name):
    """The driver class registered under ``name`` (any case, as Glance's option allowed);
    BadDriverConfiguration otherwise."""
    name = str(name).strip().lower() if name is not None else name
    if name not in DRIVERS:
        raise exception.BadDriverConfiguration(
            driver_name=name,
            reason="image_cache_driver=%r is not one of %s" % (name, ", ".join(sorted(DRIVERS))))
    module_name, class_names = DRIVERS[name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise exception.BadDriverConfiguration(
            driver_name=name, reason="cannot import %s: %s" % (module_name, err)) from err
    for class_name in class_names:
        driver_class = getattr(module, class_name, None)
        if driver_class is not None:
            return driver_class
    raise exception.BadDriverConfiguration(
        driver_name=name, reason="%s defines none of %s" % (module_name, ", ".join(class_names)))


def load_driver(name, config):
    """A configured driver instance; ``config`` is a Config or a mapping of INI keys."""
    driver_class = get_driver_class(name)
    driver = driver_class(config)
    driver.configure()
    LOG.debug("image cache driver %s configured in %s", driver_class.name, driver.base_dir)
    return driver
