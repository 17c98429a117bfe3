"""Exceptions, with the class names Glance uses so that callers can catch the same things."""


class GlanceException(Exception):
    """Base class: a message, %-formatted with the keyword arguments when there are any."""

    message = "An unknown exception occurred"

    def __init__(self, message=None, **kwargs):
        if message is None:
            message = self.message
        if kwargs:
            try:
                message = message % kwargs
            except (KeyError, TypeError, ValueError):
                pass  # keep the raw template rather than hide the real error
        self.msg = message
        super().__init__(message)

    def __str__(self):
        return self.msg


class NotFound(GlanceException):
    message = "An object with the specified identifier was not found."


class ImageNotFound(NotFound):
    message = "Image with the given id was not found."


class Forbidden(GlanceException):
    message = "You are not authorized to complete this action."


class ForbiddenPublicImage(Forbidden):
    message = "You are not authorized to complete this action."


class Duplicate(GlanceException):
    message = "An object with the same identifier already exists."


class Conflict(GlanceException):
    message = "An object with the same identifier is currently being operated on."


class Invalid(GlanceException):
    message = "Data supplied was not valid."


class InvalidSortKey(Invalid):
    message = "Sort key supplied was not valid."


class InvalidSortDir(Invalid):
    message = "Sort direction supplied was not valid."


class InvalidFilterRangeValue(Invalid):
    message = "Unable to filter using the specified range."


class InvalidFilterOperatorValue(Invalid):
    message = "Unable to filter using the specified operator."


class InvalidParameterValue(Invalid):
    message = "Invalid value '%(value)s' for parameter '%(param)s': %(extra_msg)s"


class LimitExceeded(GlanceException):
    message = "The request returned a 413 Request Entity Too Large."


class ImageMemberLimitExceeded(LimitExceeded):
    message = "The limit has been exceeded on the number of allowed image members for this image."


class ImageTagLimitExceeded(LimitExceeded):
    message = "The limit has been exceeded on the number of allowed image tags."


class ImagePropertyLimitExceeded(LimitExceeded):
    message = "The limit has been exceeded on the number of allowed image properties."


class ImageLocationLimitExceeded(LimitExceeded):
    message = "The limit has been exceeded on the number of allowed image locations."


class BadDriverConfiguration(GlanceException):
    message = "Driver %(driver_name)s could not be configured correctly. Reason: %(reason)s"


class InvalidConfiguration(Invalid):
    """A setting in the INI file (or a mapping of settings) has a bad value."""

    message = "Invalid configuration: %(reason)s"


class DBNotConfigured(GlanceException):
    message = "The image database has not been configured: call db.api.configure(url) first."
