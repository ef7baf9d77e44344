"""piggyback: live, partial-page updates for any WSGI app over plain request/response."""

from .event import Event as Event
from .exceptions import BadToken as BadToken
from .exceptions import EventRedirected as EventRedirected
from .exceptions import EventRejected as EventRejected
from .exceptions import HandlerError as HandlerError
from .exceptions import OptionError as OptionError
from .exceptions import PageBusy as PageBusy
from .exceptions import PageExpired as PageExpired
from .exceptions import PiggybackError as PiggybackError
from .exceptions import StaleEvent as StaleEvent
from .exceptions import TooLarge as TooLarge
from .exceptions import UnknownHandler as UnknownHandler
from .handles import GroupHandle as GroupHandle
from .handles import PageHandle as PageHandle
from .hooks import requires as requires
from .middleware import Piggyback as Piggyback
from .page import Page as Page
from .script import literal as literal
