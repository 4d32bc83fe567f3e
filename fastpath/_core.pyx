# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The compiled decision core: the same decisions as fastpath/reference, in microseconds.

Engine(world) mirrors a World into typed records once per projection change; Engine.decide() then
runs per INVITE with C integers for money and time, C lookups into shared deck images, and Python
objects only where a string has to be built. tests/test_fastpath_differential.py holds it to the
reference, decisions and traces alike.

Engine.trace() runs the same code with a list that each step appends its facts to (fastpath.decision names
them), for the route simulator; Engine.decide() passes None, and each step's cost is then one pointer test.
"""

from cpython.unicode cimport PyUnicode_GET_LENGTH
from libc.stdint cimport INT64_MAX, int64_t
from libc.stdlib cimport free, malloc


cdef extern from "Python.h":
    bint PyUnicode_IS_ASCII(object)
    void* PyUnicode_DATA(object)

from fastpath.deck_image cimport DeckImage, RateRec

from fastpath import model
from fastpath.decision import ANONYMOUS, MAX_CALLER_ID_DIGITS, MAX_USER_LENGTH

DEF LOCAL_CALL_INCREMENT = 60


cdef inline bint _is_number(str text, Py_ssize_t longest, Py_ssize_t shortest=1):
    """shortest..longest ASCII digits (fastpath.decision.is_number)."""
    cdef Py_ssize_t length = PyUnicode_GET_LENGTH(text), i
    cdef const char* data
    if length == 0 or length < shortest or length > longest or not PyUnicode_IS_ASCII(text):
        return False
    data = <const char*>PyUnicode_DATA(text)
    for i in range(length):
        if data[i] < 48 or data[i] > 57:
            return False
    return True


cdef inline bint _is_user(str text):
    """1..64 ASCII letters, digits, '.', '_', '-', not starting with one of the three (fastpath.decision.is_user)."""
    cdef Py_ssize_t length = PyUnicode_GET_LENGTH(text), i
    cdef const char* data
    cdef char c
    if length == 0 or length > MAX_USER_LENGTH or not PyUnicode_IS_ASCII(text):
        return False
    data = <const char*>PyUnicode_DATA(text)
    for i in range(length):
        c = data[i]
        if (48 <= c <= 57) or (65 <= c <= 90) or (97 <= c <= 122):
            continue
        if (c == 46 or c == 95 or c == 45) and i > 0:
            continue
        return False
    return True


# ---------------------------------------------------------------------------------------------- rating

cdef inline int64_t _ceil_div(int64_t numerator, int64_t denominator) noexcept nogil:
    return (numerator + denominator - 1) // denominator  # numerator >= 0, denominator > 0


cdef int64_t c_cost(int64_t billable, int64_t connect_fee, int64_t included, int64_t rate, int64_t initial,
                    int64_t increment) noexcept nogil:
    cdef int64_t rest, charged
    if billable <= 0:
        return 0
    rest = billable - included
    if rest <= 0:
        charged = 0
    elif rest <= initial:
        charged = initial
    else:
        charged = initial + _ceil_div(rest - initial, increment) * increment
    return connect_fee + _ceil_div(charged * rate, 60)


cdef int64_t c_max_duration(int64_t available, int64_t connect_fee, int64_t included, int64_t rate,
                            int64_t initial, int64_t increment, int64_t limit) noexcept nogil:
    cdef int64_t low, high, middle
    if connect_fee == 0 and rate == 0:
        return limit
    if c_cost(1, connect_fee, included, rate, initial, increment) > available:
        return 0
    if c_cost(limit, connect_fee, included, rate, initial, increment) <= available:
        return limit
    low = 1
    high = limit
    while high - low > 1:
        middle = (low + high) // 2
        if c_cost(middle, connect_fee, included, rate, initial, increment) <= available:
            low = middle
        else:
            high = middle
    return low


def cost(int64_t billable, int64_t connect_fee, int64_t included, int64_t rate, int64_t initial,
         int64_t increment):
    return c_cost(billable, connect_fee, included, rate, initial, increment)


def max_duration(int64_t available, int64_t connect_fee, int64_t included, int64_t rate, int64_t initial,
                 int64_t increment, int64_t limit):
    return c_max_duration(available, connect_fee, included, rate, initial, increment, limit)


def marked_up(int64_t rate, int64_t markup_percent):
    return _ceil_div(rate * (100 + markup_percent), 100)


# ---------------------------------------------------------------------------------------------- records

cdef class Route:
    cdef readonly str trunk, provider, destination, caller_id, prefix
    cdef readonly tuple gateways, terms
    cdef readonly int64_t rate_per_min, cost
    cdef readonly int max_concurrent_calls, cps

    def as_tuple(self):
        return (self.trunk, self.provider, self.gateways, self.destination, self.caller_id, self.prefix,
                self.rate_per_min, self.cost, self.max_concurrent_calls, self.cps, self.terms)


cdef class Decision:
    cdef readonly int code
    cdef readonly str reason, stage, direction, caller_id, destination, rate_group, prefix, callee
    cdef readonly int64_t rate_per_min, granted_seconds, reserve
    cdef readonly tuple routes, callee_devices, terms
    cdef readonly bint record

    def as_tuple(self):
        return (self.code, self.reason, self.stage, self.direction, self.caller_id, self.destination,
                self.rate_group, self.prefix, self.rate_per_min, self.granted_seconds, self.reserve,
                tuple(r.as_tuple() for r in self.routes), self.callee, self.callee_devices, self.record,
                self.terms)


cdef Decision _decision(int code, str reason, str stage, str direction, str caller_id, str destination,
                        bint record):
    cdef Decision d = Decision.__new__(Decision)
    d.code = code
    d.reason = reason
    d.stage = stage
    d.direction = direction
    d.caller_id = caller_id
    d.destination = destination
    d.rate_group = ""
    d.prefix = ""
    d.callee = ""
    d.rate_per_min = 0
    d.granted_seconds = 0
    d.reserve = 0
    d.routes = ()
    d.callee_devices = ()
    d.terms = ()
    d.record = record
    return d


cdef class _Account:
    cdef str number, rate_group, non_cli_rate_group, default_caller_id
    cdef bint active, deleted, has_expiry, allow_local_calls, allow_loss_less_routing, allow_recording
    cdef int64_t expire_epoch, lc_charge_per_min
    cdef int cli_pool
    cdef _Rules rules

    cdef inline bint usable(self, int64_t now):
        return self.active and not self.deleted and not (self.has_expiry and self.expire_epoch <= now)


cdef class _Rules:
    # Each list holds (0, match, replace) for a prefix rule or (1, compiled_pattern, replacement).
    cdef list caller_id_inbound, caller_id_outbound, destination, termination_caller_id, termination_destination


cdef class _Group:
    cdef str id
    cdef bint active, by_cost
    cdef int64_t markup_percent, default_initial, default_increment
    cdef tuple trunks


cdef class _Trunk:
    cdef str id, provider
    cdef bint usable
    cdef str unusable  # why not usable, for traces (fastpath.decision.TRUNK_VERDICTS); "" when usable
    cdef int64_t provider_expires  # epoch second the provider's account expires (INT64_MAX: never)
    cdef tuple gateways
    cdef int max_concurrent_calls, cps, priority
    cdef _Rules rules
    cdef object deck


cdef list _compile(list rules):
    compiled = []
    for rule in rules:
        if isinstance(rule, model.localization.PrefixRule):
            compiled.append((0, rule.match, rule.replace))
        else:
            compiled.append((1, rule.pattern, rule.replacement))
    return compiled


cdef _Rules _rules(object source):
    cdef _Rules rules = _Rules.__new__(_Rules)
    rules.caller_id_inbound = _compile(source.caller_id_inbound)
    rules.caller_id_outbound = _compile(source.caller_id_outbound)
    rules.destination = _compile(source.destination)
    rules.termination_caller_id = _compile(source.termination_caller_id)
    rules.termination_destination = _compile(source.termination_destination)
    return rules


cdef str _localize(str number, list rules, list trace, str name, str owner):
    """The rules applied in order; with a trace, each rule's (name, owner, index, before, after) noted."""
    cdef tuple rule
    cdef str before
    cdef Py_ssize_t index = 0
    for rule in rules:
        before = number
        if rule[0] == 0:
            if number.startswith(rule[1]):
                number = rule[2] + number[len(<str>rule[1]):]
        else:
            number = rule[1].sub(rule[2], number, 1)
        if trace is not None:
            trace.append(("localize", name, owner, index, before, number))
        index += 1
    return number


# ---------------------------------------------------------------------------------------------- deck lookups

cdef struct Hit:
    # A deck hit: the record's numbers (strings are fetched only when a route needs them).
    int64_t connect_fee, included, rate, initial, increment, priority, strip
    Py_ssize_t prefix_len
    bint has_strings


cdef class _DictStrings:
    """The strings of a hit in a plain (non-image) deck, which has no C record to read them from later."""
    cdef object value


cdef bint _lookup(object deck, str number, Hit* hit, _DictStrings strings) except -1:
    """Fill `hit` with the longest prefix match of `number` in `deck`; False when none."""
    cdef DeckImage image
    cdef RateRec rec
    cdef const char* data
    cdef bytes encoded
    if deck is None:
        return False
    if type(deck) is DeckImage:
        image = <DeckImage>deck
        if PyUnicode_IS_ASCII(number):  # no copy: the str's own bytes
            if not image.match(<const char*>PyUnicode_DATA(number), PyUnicode_GET_LENGTH(number), &rec):
                return False
        else:
            encoded = number.encode("utf-8", "replace")
            if not image.match(encoded, len(encoded), &rec):
                return False
        hit.connect_fee = rec.connect_fee
        hit.included = rec.included_seconds
        hit.rate = rec.rate_per_min
        hit.initial = rec.initial_increment
        hit.increment = rec.increment
        hit.priority = rec.priority
        hit.strip = rec.strip
        hit.prefix_len = rec.prefix_len
        hit.has_strings = rec.str_length > 0
        if hit.has_strings:
            strings.value = image.record_strings(&rec)
        return True
    found = deck.longest_match(number)
    if found is None:
        return False
    prefix, record = found
    hit.prefix_len = len(prefix)
    hit.connect_fee, hit.included, hit.rate, hit.initial, hit.increment = record[:5]
    if len(record) == 7:  # odeck: ..., forced_trunks, priority
        strings.value, hit.priority, hit.strip = tuple(record[5]), record[6], 0
    else:  # tdeck: ..., strip, prepend, priority
        hit.strip, strings.value, hit.priority = record[5], record[6], record[7]
    hit.has_strings = len(strings.value) > 0
    return True


cdef struct Candidate:
    int64_t key[5]  # compared in order; LCR: -prefix length, rate, trunk priority, rate priority, position
    Py_ssize_t route


cdef inline bint _before(Candidate* a, Candidate* b) noexcept nogil:
    cdef int i
    for i in range(5):
        if a.key[i] != b.key[i]:
            return a.key[i] < b.key[i]
    return False


cdef void _sort(Candidate* items, Py_ssize_t count) noexcept nogil:
    """Insertion sort: a rate group has a handful of trunks."""
    cdef Py_ssize_t i, j
    cdef Candidate item
    for i in range(1, count):
        item = items[i]
        j = i - 1
        while j >= 0 and _before(&item, &items[j]):
            items[j + 1] = items[j]
            j -= 1
        items[j + 1] = item


# ---------------------------------------------------------------------------------------------- engine

cdef class Engine:
    """One World, mirrored for speed. Build a new Engine when the World changes (cheap: no deck copies)."""
    cdef dict accounts, groups, trunks, origination_decks, devices_active, did_owner, dids_by_account
    cdef dict caller_ids, devices_by_account, pools_both
    cdef int64_t max_call_seconds
    cdef Py_ssize_t max_destination_digits, min_destination_digits
    cdef bint fallback_to_default

    def __init__(self, world):
        self.max_call_seconds = world.max_call_seconds
        self.max_destination_digits = world.max_destination_digits
        self.min_destination_digits = world.min_destination_digits
        self.fallback_to_default = world.caller_id_fallback == "DEFAULT_CALLER_ID"
        rules = {key: _rules(value) for key, value in world.localizations.items()}
        no_rules = _rules(model.Rules())
        self.accounts = {n: self._account(a, rules.get(a.localization or "", no_rules))
                         for n, a in world.accounts.items()}
        self.groups = {g.id: self._group(g) for g in world.rate_groups.values()}
        self.trunks = {t.id: self._trunk(t, rules.get(t.localization or "", no_rules),
                                         world.termination_decks.get(t.id))
                       for t in world.trunks.values()}
        self.origination_decks = dict(world.origination_decks)
        self.devices_active = {u: d for u, d in world.devices.items() if d.status == model.ACTIVE}
        self.did_owner = dict(world.did_owner)
        self.dids_by_account = dict(world.dids_by_account)
        self.caller_ids = dict(world.caller_ids)
        self.devices_by_account = dict(world.devices_by_account)
        self.pools_both = {}

    cdef _Account _account(self, object a, _Rules rules):
        cdef _Account c = _Account.__new__(_Account)
        c.number = a.number
        c.rate_group = a.rate_group or ""
        c.non_cli_rate_group = a.non_cli_rate_group or ""
        c.active = a.status == model.ACTIVE
        c.deleted = a.deleted
        c.has_expiry = a.expire_epoch is not None
        c.expire_epoch = a.expire_epoch or 0
        c.allow_local_calls = a.allow_local_calls
        c.allow_loss_less_routing = a.allow_loss_less_routing
        c.allow_recording = a.allow_recording
        c.lc_charge_per_min = a.lc_charge_per_min
        c.cli_pool = a.cli_pool
        c.default_caller_id = a.default_caller_id
        c.rules = rules
        return c

    cdef _Group _group(self, object g):
        cdef _Group c = _Group.__new__(_Group)
        c.id = g.id
        c.active = g.status == model.ACTIVE
        c.by_cost = g.routing_strategy == "COST"
        c.markup_percent = g.markup_percent
        c.default_initial = g.default_initial_increment
        c.default_increment = g.default_increment
        c.trunks = tuple(g.trunks)
        return c

    cdef _Trunk _trunk(self, object t, _Rules rules, object deck):
        cdef _Trunk c = _Trunk.__new__(_Trunk)
        c.id = t.id
        c.provider = t.provider
        c.unusable = ("inactive" if t.status != model.ACTIVE else "provider_disabled" if not t.provider_usable
                      else "no_gateways" if len(t.gateways) == 0 else "no_rates" if deck is None else "")
        c.usable = not c.unusable
        c.provider_expires = INT64_MAX if t.provider_expire_epoch is None else t.provider_expire_epoch
        c.gateways = tuple(t.gateways)
        c.max_concurrent_calls = t.max_concurrent_calls
        c.cps = t.cps
        c.priority = t.priority
        c.rules = rules
        c.deck = deck
        return c

    cpdef Decision decide(self, str account_number, str caller_id, str destination, int64_t available,
                          int64_t now, int64_t entropy=0):
        return self._decide(account_number, caller_id, destination, available, now, entropy, None)

    def trace(self, str account_number, str caller_id, str destination, int64_t available, int64_t now,
              int64_t entropy=0):
        """(the decision, the facts it went through): fastpath.decision names the trace's entries."""
        cdef list facts = []
        decision = self._decide(account_number, caller_id, destination, available, now, entropy, facts)
        return decision, tuple(facts)

    cdef Decision _decide(self, str account_number, str caller_id, str destination, int64_t available,
                          int64_t now, int64_t entropy, list trace):
        cdef _Account account = self.accounts.get(account_number)
        cdef Decision d
        if account is None or not account.usable(now):
            return _decision(403, "Account disabled", "account", "", "", "", False)
        destination = _localize(destination, account.rules.destination, trace, "destination", "")
        cdef bint inbound = destination in self.did_owner
        cdef bint local = account.allow_local_calls and destination in self.devices_active
        if not (inbound or local or _is_number(destination, self.max_destination_digits,
                                               self.min_destination_digits)):
            return _decision(484, "Address Incomplete", "number", "", "", "", False)
        if inbound:
            caller_id = self._presentable(_localize(caller_id, account.rules.caller_id_inbound, trace,
                                                    "caller_id_inbound", ""), account, True, trace)
            return self._inbound(destination, caller_id, account, now)
        caller_id = self._presentable(_localize(caller_id, account.rules.caller_id_outbound, trace,
                                                "caller_id_outbound", ""), account, local, trace)
        if local:
            return self._local(account, caller_id, destination, available, now)
        return self._outbound(account, caller_id, destination, available, entropy, now, trace)

    cdef str _presentable(self, str caller_id, _Account account, bint on_switch, list trace):
        """A caller id that cannot be presented (not plain digits toward a carrier, not a plain user part toward
        our own devices) becomes the account's default caller id, or anonymous."""
        if _is_user(caller_id) if on_switch else _is_number(caller_id, MAX_CALLER_ID_DIGITS):
            return caller_id
        presented = account.default_caller_id if self.fallback_to_default and account.default_caller_id \
            else ANONYMOUS
        if trace is not None:
            trace.append(("fallback", caller_id, presented))
        return presented

    cdef Decision _inbound(self, str did, str caller_id, _Account account, int64_t now):
        owner_number = self.did_owner[did]
        cdef _Account owner = self.accounts.get(owner_number or "")
        cdef Decision d
        if owner is None or not owner.usable(now):
            return _decision(404, "DID not in service", "direction", "inbound", caller_id, did,
                             account.allow_recording)
        d = _decision(200, "OK", "done", "inbound", caller_id, did, account.allow_recording)
        d.callee = owner.number
        d.callee_devices = self.devices_by_account.get(owner.number, ())
        d.granted_seconds = self.max_call_seconds
        d.terms = (0, 0, 0, 1, 1)
        return d

    cdef Decision _local(self, _Account account, str caller_id, str username, int64_t available, int64_t now):
        cdef _Account callee = self.accounts.get(self.devices_active[username].account)
        if callee is None or not callee.usable(now):
            return _decision(404, "Callee not in service", "direction", "local", caller_id, username,
                             account.allow_recording)
        cdef int64_t rate = account.lc_charge_per_min
        cdef int64_t granted = c_max_duration(available, 0, 0, rate, LOCAL_CALL_INCREMENT, LOCAL_CALL_INCREMENT,
                                              self.max_call_seconds)
        cdef Decision d
        if granted == 0:
            return _decision(402, "Insufficient balance", "balance", "local", caller_id, username,
                             account.allow_recording)
        d = _decision(200, "OK", "done", "local", caller_id, username, account.allow_recording)
        d.callee = username
        d.rate_per_min = rate
        d.granted_seconds = granted
        d.reserve = c_cost(granted, 0, 0, rate, LOCAL_CALL_INCREMENT, LOCAL_CALL_INCREMENT)
        d.terms = (0, 0, rate, LOCAL_CALL_INCREMENT, LOCAL_CALL_INCREMENT)
        return d

    cdef tuple _pool(self, _Account account, int option):
        """The CLI pool an option checks: DIDs (1, 3, 6), caller ids (2, 4, 7) or both (5, 8)."""
        if option == 1 or option == 3 or option == 6:
            return self.dids_by_account.get(account.number, ())
        if option == 2 or option == 4 or option == 7:
            return self.caller_ids.get(account.number, ())
        both = self.pools_both.get(account.number)
        if both is None:
            both = tuple(sorted(set(self.dids_by_account.get(account.number, ()))
                                | set(self.caller_ids.get(account.number, ()))))
            self.pools_both[account.number] = both
        return both

    cdef str _cli_outcome(self, _Account account, str caller_id, tuple pool, int option):
        """What CLI pool `option` does with a caller id (fastpath.decision.CLI_OUTCOMES)."""
        if caller_id in pool:
            return "in_pool"
        if option <= 2:
            return "random" if pool else "empty_pool"
        if option <= 5:
            return "non_cli" if account.non_cli_rate_group else "no_non_cli_group"
        return "reject"

    cdef Decision _outbound(self, _Account account, str caller_id, str destination, int64_t available,
                            int64_t entropy, int64_t now, list trace):
        cdef int option = account.cli_pool
        cdef str group_id = account.rate_group
        cdef str outcome = "disabled"
        cdef tuple pool = ()
        cdef Decision d
        cdef _Group group
        cdef Hit hit
        cdef _DictStrings strings = _DictStrings.__new__(_DictStrings)
        cdef bint found = False, refused = False
        cdef int64_t initial, increment, rate, granted
        if option != 0:
            pool = self._pool(account, option)
            outcome = self._cli_outcome(account, caller_id, pool, option)
            if outcome == "random":
                caller_id = pool[entropy % len(pool)]
            elif outcome == "non_cli":
                group_id = account.non_cli_rate_group
            elif outcome != "in_pool":
                refused = True
        if trace is not None:
            trace.append(("cli", option, len(pool), outcome, caller_id, "" if refused else group_id))
        if refused:
            return _decision(403, "CLI not allowed", "cli", "outbound", caller_id, destination,
                             account.allow_recording)
        group = self.groups.get(group_id)
        if group is not None and group.active:
            found = _lookup(self.origination_decks.get(group_id), destination, &hit, strings)
        if not found:
            if trace is not None:
                trace.append(("rate", group_id, "unknown_group" if group is None else
                              "inactive_group" if not group.active else "no_match", "", 0, ()))
            return _decision(404, "No rate for destination", "rate", "outbound", caller_id, destination,
                             account.allow_recording)
        initial = hit.initial if hit.initial else group.default_initial
        increment = hit.increment if hit.increment else group.default_increment
        rate = _ceil_div(hit.rate * (100 + group.markup_percent), 100)
        if trace is not None:
            trace.append(("rate", group.id, "matched", destination[:hit.prefix_len], hit.rate,
                          (hit.connect_fee, hit.included, rate, initial, increment)))
        granted = c_max_duration(available, hit.connect_fee, hit.included, rate, initial, increment,
                                 self.max_call_seconds)
        d = _decision(402, "Insufficient balance", "balance", "outbound", caller_id, destination,
                      account.allow_recording)
        d.rate_group = group.id
        d.prefix = destination[:hit.prefix_len]
        d.rate_per_min = rate
        if granted == 0:
            return d
        d.granted_seconds = granted
        forced = tuple(strings.value) if hit.has_strings else group.trunks
        if trace is not None:
            trace.append(("candidates", "forced" if hit.has_strings else "group", forced))
        d.routes = self._routes(account, group, forced, destination, caller_id, rate, granted, now, trace)
        if not d.routes:
            d.code, d.reason, d.stage = 503, "No route available", "route"
            return d
        d.code, d.reason, d.stage = 200, "OK", "done"
        d.reserve = c_cost(granted, hit.connect_fee, hit.included, rate, initial, increment)
        d.terms = (hit.connect_fee, hit.included, rate, initial, increment)
        return d

    cdef tuple _routes(self, _Account account, _Group group, tuple trunk_ids, str destination, str caller_id,
                       int64_t origination_rate, int64_t granted, int64_t now, list trace):
        cdef Py_ssize_t count = len(trunk_ids), kept = 0, index
        cdef Candidate[16] small
        cdef Candidate* items = small
        cdef list routes = []
        if count > 16:  # rare: a group with many trunks
            items = <Candidate*>malloc(count * sizeof(Candidate))
            if items == NULL:
                raise MemoryError()
        try:
            self._collect(account, group, trunk_ids, destination, caller_id, origination_rate, granted, now,
                          items, &kept, routes, trace)
            _sort(items, kept)
            return tuple([routes[items[index].route] for index in range(kept)])
        finally:
            if items != small:
                free(items)

    cdef int _collect(self, _Account account, _Group group, tuple trunk_ids, str destination, str caller_id,
                      int64_t origination_rate, int64_t granted, int64_t now, Candidate* items,
                      Py_ssize_t* kept_out, list routes, list trace) except -1:
        """One Route per usable trunk with a termination rate (loss-less filtered), and its sort key."""
        cdef Py_ssize_t count = len(trunk_ids), kept = 0, index
        cdef _Trunk trunk
        cdef Hit hit
        cdef _DictStrings strings = _DictStrings.__new__(_DictStrings)
        cdef Route route
        cdef str number
        for index in range(count):
            trunk = self.trunks.get(trunk_ids[index])
            if trunk is None or not trunk.usable or trunk.provider_expires <= now:
                if trace is not None:
                    trace.append(("trunk", trunk_ids[index], "unknown" if trunk is None else
                                  trunk.unusable or "provider_expired", "", 0))
                continue
            number = _localize(destination, trunk.rules.termination_destination, trace, "termination_destination",
                               trunk.id) if trunk.rules.termination_destination else destination
            if not _lookup(trunk.deck, number, &hit, strings):
                if trace is not None:
                    trace.append(("trunk", trunk.id, "no_rate", "", 0))
                continue
            if hit.rate > origination_rate and not account.allow_loss_less_routing:
                if trace is not None:
                    trace.append(("trunk", trunk.id, "loss", number[:hit.prefix_len], hit.rate))
                continue
            route = Route.__new__(Route)
            route.trunk = trunk.id
            route.provider = trunk.provider
            route.gateways = trunk.gateways
            route.destination = number if hit.strip == 0 and not hit.has_strings else \
                (strings.value if hit.has_strings else "") + number[hit.strip:]
            route.caller_id = _localize(caller_id, trunk.rules.termination_caller_id, trace, "termination_caller_id",
                                        trunk.id) if trunk.rules.termination_caller_id and caller_id != ANONYMOUS \
                else caller_id
            route.prefix = number[:hit.prefix_len]
            if trace is not None:
                trace.append(("trunk", trunk.id, "", route.prefix, hit.rate))
            route.rate_per_min = hit.rate
            route.cost = c_cost(granted, hit.connect_fee, hit.included, hit.rate, hit.initial or 1, hit.increment or 1)
            route.terms = (hit.connect_fee, hit.included, hit.rate, hit.initial or 1, hit.increment or 1)
            route.max_concurrent_calls = trunk.max_concurrent_calls
            route.cps = trunk.cps
            if group.by_cost:
                items[kept].key[0] = hit.rate
                items[kept].key[1] = trunk.priority
                items[kept].key[2] = hit.priority
                items[kept].key[3] = index
                items[kept].key[4] = 0
            else:
                items[kept].key[0] = -hit.prefix_len
                items[kept].key[1] = hit.rate
                items[kept].key[2] = trunk.priority
                items[kept].key[3] = hit.priority
                items[kept].key[4] = index
            items[kept].route = len(routes)
            routes.append(route)
            kept += 1
        kept_out[0] = kept
        return 0
