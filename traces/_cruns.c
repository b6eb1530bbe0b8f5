/* Compiled run recorders: ``traces._runs``' ``HandleRun`` and ``SendRun`` in C.
 *
 * The same records as the pure-Python classes in ``_runs.py`` (the reference: every test of
 * runs runs against both), kept in C arrays: a message costs no Python object while it is
 * recorded (no float per time, no list slot), and an event's time is read in C
 * (``clock_gettime(CLOCK_MONOTONIC)``, what ``time.perf_counter`` reads on Linux) when the
 * run's clock is ``time.perf_counter``; any other clock (``MockClock``) is called.
 *
 * The types are final and exact on purpose: CPython 3.11 specializes a call of a C method
 * only on an instance of exactly the method's type (a Python subclass measured 0.50x
 * tracing on/off instead of 0.55x). Neither type is tracked by the cyclic GC: a run refers
 * to strings, type objects and a clock, none of which refers back to it.
 *
 * Only ``ActorRef.tell`` (``SendRun.add``) and the actor loop (``HandleRun.begin``/``end``)
 * append, only while the run is its tracer's pending record; ``freeze`` ends that.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <time.h>

/* Set by bind(): traces.TraceEvent, traces.NO_PAYLOAD and RUN_MAX_MESSAGES. */
static PyObject *event_type = NULL;
static PyObject *no_payload = NULL;
static int run_max = 0;
static PyObject *perf_counter = NULL; /* time.perf_counter: read in C */
static PyObject *s_send, *s_handle, *s_receive, *s_ok;

/* *out = clock() + offset; clock is time.perf_counter when mono. */
static inline int
read_clock(PyObject *clock, int mono, double offset, double *out)
{
    if (mono) {
        struct timespec ts;
        if (clock_gettime(CLOCK_MONOTONIC, &ts) == 0) {
            long long ns = (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
            *out = (double)ns / 1e9 + offset;
            return 0;
        }
    }
    PyObject *r = PyObject_CallNoArgs(clock);
    if (r == NULL)
        return -1;
    double v = PyFloat_AsDouble(r);
    Py_DECREF(r);
    if (v == -1.0 && PyErr_Occurred())
        return -1;
    *out = v + offset;
    return 0;
}

static int
check_bound(void)
{
    if (event_type == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "_cruns.bind() was not called");
        return -1;
    }
    return 0;
}

/* TraceEvent(seq, t, kind, actor, peer, msg_id, cause, corr, msg_type[, payload, detail,
 * outcome, t0]) */
static PyObject *
make_event(long long seq, double t, PyObject *kind, PyObject *actor, PyObject *peer,
           long long msg_id, PyObject *cause, PyObject *msg_type, int handle, double t0)
{
    PyObject *args[13] = {NULL};
    PyObject *res = NULL;
    Py_ssize_t n = handle ? 13 : 9;
    args[0] = PyLong_FromLongLong(seq);
    args[1] = PyFloat_FromDouble(t);
    args[5] = PyLong_FromLongLong(msg_id);
    if (handle)
        args[12] = PyFloat_FromDouble(t0);
    if (args[0] == NULL || args[1] == NULL || args[5] == NULL || (handle && args[12] == NULL))
        goto done;
    args[2] = kind;
    args[3] = actor;
    args[4] = peer;
    args[6] = cause;
    args[7] = Py_None;
    args[8] = msg_type;
    if (handle) {
        args[9] = no_payload;
        args[10] = Py_None;
        args[11] = s_ok;
    }
    res = PyObject_Vectorcall(event_type, args, n, NULL);
done:
    Py_XDECREF(args[0]);
    Py_XDECREF(args[1]);
    Py_XDECREF(args[5]);
    if (handle)
        Py_XDECREF(args[12]);
    return res;
}

/* -- HandleRun ------------------------------------------------------------------------ */

typedef struct {
    long long mid;
    PyObject *name; /* the message's type name */
    double t0, t;
} HandleSlot;

typedef struct {
    PyObject_HEAD
    PyObject *actor;
    PyObject *clock;
    long long seq;
    double offset;
    int mono, frozen;
    int begun, ended; /* messages begun, and ended (begun - ended: 0 or 1 open) */
    int cap;
    HandleSlot *slots;
} HandleRunObject;

static PyTypeObject HandleRunType;

static PyObject *
HandleRun_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"actor", "seq", "clock", "offset", NULL};
    PyObject *actor, *clock;
    long long seq;
    double offset = 0.0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "ULO|d:HandleRun", kwlist, &actor, &seq,
                                     &clock, &offset))
        return NULL;
    if (!PyCallable_Check(clock)) {
        PyErr_Format(PyExc_TypeError, "clock must be callable, got %R", clock);
        return NULL;
    }
    HandleRunObject *self = (HandleRunObject *)type->tp_alloc(type, 0);
    if (self == NULL)
        return NULL;
    self->actor = Py_NewRef(actor);
    self->clock = Py_NewRef(clock);
    self->seq = seq;
    self->offset = offset;
    self->mono = clock == perf_counter;
    return (PyObject *)self;
}

static void
HandleRun_dealloc(HandleRunObject *self)
{
    for (int i = 0; i < self->begun; i++)
        Py_DECREF(self->slots[i].name);
    PyMem_Free(self->slots);
    Py_XDECREF(self->actor);
    Py_XDECREF(self->clock);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static int
HandleRun_writable(HandleRunObject *self)
{
    if (self->frozen) {
        PyErr_SetString(PyExc_RuntimeError, "a written run never changes");
        return -1;
    }
    return 0;
}

/* begin(msg_id, msg, fresh): msg's handler begins. Its t0 is the clock's, or the previous
 * message's end when the loop went straight on (not fresh, and a message of this run
 * ended). */
static PyObject *
HandleRun_begin(HandleRunObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 3) {
        PyErr_Format(PyExc_TypeError, "begin() takes 3 arguments (%zd given)", nargs);
        return NULL;
    }
    if (HandleRun_writable(self) < 0)
        return NULL;
    int i = self->begun;
    if (i != self->ended) {
        PyErr_SetString(PyExc_RuntimeError, "begin(): a message of the run is still open");
        return NULL;
    }
    if (i >= run_max) {
        PyErr_Format(PyExc_RuntimeError, "begin(): the run is full (%d messages)", run_max);
        return NULL;
    }
    long long mid = PyLong_AsLongLong(args[0]);
    if (mid == -1 && PyErr_Occurred())
        return NULL;
    int fresh = PyObject_IsTrue(args[2]);
    if (fresh < 0)
        return NULL;
    double t0;
    if (fresh || i == 0) {
        if (read_clock(self->clock, self->mono, self->offset, &t0) < 0)
            return NULL;
    }
    else {
        t0 = self->slots[i - 1].t;
    }
    if (i == self->cap) {
        int cap = self->cap ? self->cap * 2 : 8;
        if (cap > run_max)
            cap = run_max;
        HandleSlot *slots = PyMem_Realloc(self->slots, (size_t)cap * sizeof(HandleSlot));
        if (slots == NULL)
            return PyErr_NoMemory();
        self->slots = slots;
        self->cap = cap;
    }
    PyObject *name = PyType_GetName(Py_TYPE(args[1]));
    if (name == NULL)
        return NULL;
    HandleSlot *s = &self->slots[i];
    s->mid = mid;
    s->name = name;
    s->t0 = t0;
    s->t = 0.0;
    self->begun = i + 1;
    Py_RETURN_NONE;
}

/* end(): the open message's handler returned, now. */
static PyObject *
HandleRun_end(HandleRunObject *self, PyObject *Py_UNUSED(ignored))
{
    if (HandleRun_writable(self) < 0)
        return NULL;
    if (self->begun == self->ended) {
        PyErr_SetString(PyExc_RuntimeError, "end(): no message of the run is open");
        return NULL;
    }
    if (read_clock(self->clock, self->mono, self->offset, &self->slots[self->ended].t) < 0)
        return NULL;
    self->ended = self->begun;
    Py_RETURN_NONE;
}

static PyObject *
HandleRun_take_open(HandleRunObject *self, PyObject *arg)
{
    if (HandleRun_writable(self) < 0)
        return NULL;
    long long mid = PyLong_AsLongLong(arg);
    if (mid == -1 && PyErr_Occurred())
        return NULL;
    if (self->begun == self->ended || self->slots[self->ended].mid != mid)
        Py_RETURN_NONE;
    HandleSlot *s = &self->slots[self->ended];
    PyObject *res = Py_BuildValue("(Od)", s->name, s->t0);
    if (res == NULL)
        return NULL;
    Py_DECREF(s->name);
    self->begun = self->ended;
    return res;
}

static PyObject *
HandleRun_freeze(HandleRunObject *self, PyObject *Py_UNUSED(ignored))
{
    if (!self->frozen && self->cap > self->begun) {
        /* Written: keep only what is used. */
        if (self->begun == 0) {
            PyMem_Free(self->slots);
            self->slots = NULL;
            self->cap = 0;
        }
        else {
            HandleSlot *slots =
                PyMem_Realloc(self->slots, (size_t)self->begun * sizeof(HandleSlot));
            if (slots != NULL) {
                self->slots = slots;
                self->cap = self->begun;
            }
        }
    }
    self->frozen = 1;
    Py_RETURN_NONE;
}

static inline long long
HandleRun_events(HandleRunObject *self)
{
    return (long long)self->ended * 2 + (self->begun > self->ended);
}

static PyObject *
HandleRun_handle_event(HandleRunObject *self, int i)
{
    HandleSlot *s = &self->slots[i];
    return make_event(self->seq + 2LL * i + 1, s->t, s_handle, self->actor, Py_None, s->mid,
                      Py_None, s->name, 1, s->t0);
}

static PyObject *
HandleRun_receive_event(HandleRunObject *self, int i)
{
    HandleSlot *s = &self->slots[i];
    return make_event(self->seq + 2LL * i, s->t0, s_receive, self->actor, Py_None, s->mid,
                      Py_None, s->name, 0, 0.0);
}

static PyObject *
HandleRun_records(HandleRunObject *self, PyObject *Py_UNUSED(ignored))
{
    if (check_bound() < 0)
        return NULL;
    PyObject *out = PyList_New(0);
    if (out == NULL)
        return NULL;
    for (int i = 0; i < self->begun; i++) {
        PyObject *e =
            i < self->ended ? HandleRun_handle_event(self, i) : HandleRun_receive_event(self, i);
        if (e == NULL || PyList_Append(out, e) < 0) {
            Py_XDECREF(e);
            Py_DECREF(out);
            return NULL;
        }
        Py_DECREF(e);
    }
    return out;
}

static PyObject *
HandleRun_lone_record(HandleRunObject *self, PyObject *Py_UNUSED(ignored))
{
    if (check_bound() < 0)
        return NULL;
    if (self->begun != 1)
        Py_RETURN_NONE;
    return self->ended ? HandleRun_handle_event(self, 0) : HandleRun_receive_event(self, 0);
}

static PyObject *
HandleRun_get_items(HandleRunObject *self, void *Py_UNUSED(closure))
{
    Py_ssize_t n = (Py_ssize_t)self->ended * 4 + (self->begun > self->ended) * 3;
    PyObject *out = PyTuple_New(n);
    if (out == NULL)
        return NULL;
    Py_ssize_t k = 0;
    for (int i = 0; i < self->begun; i++) {
        HandleSlot *s = &self->slots[i];
        PyObject *v[4] = {PyLong_FromLongLong(s->mid), Py_NewRef(s->name),
                          PyFloat_FromDouble(s->t0),
                          i < self->ended ? PyFloat_FromDouble(s->t) : NULL};
        int m = i < self->ended ? 4 : 3;
        for (int j = 0; j < m; j++) {
            if (v[j] == NULL) {
                for (int q = j + 1; q < m; q++)
                    Py_XDECREF(v[q]);
                Py_DECREF(out);
                return NULL;
            }
            PyTuple_SET_ITEM(out, k++, v[j]);
        }
    }
    return out;
}

/* columns(): (ids, types, t0, t) as a run line writes them (traces.RUN_LINES): types is
 * the one type name if every message has it, else a tuple; t0[i] is None where message i
 * began when message i - 1 ended (the loop went straight on). */
static PyObject *
HandleRun_columns(HandleRunObject *self, PyObject *Py_UNUSED(ignored))
{
    int n = self->begun, ended = self->ended;
    PyObject *ids = PyTuple_New(n), *t0 = PyTuple_New(n), *t = PyTuple_New(ended);
    PyObject *types = NULL, *res = NULL;
    if (ids == NULL || t0 == NULL || t == NULL)
        goto done;
    int same = 1;
    for (int i = 1; i < n && same; i++)
        same = PyUnicode_Compare(self->slots[i].name, self->slots[0].name) == 0;
    if (PyErr_Occurred())
        goto done;
    types = same && n ? Py_NewRef(self->slots[0].name) : PyTuple_New(n);
    if (types == NULL)
        goto done;
    for (int i = 0; i < n; i++) {
        HandleSlot *s = &self->slots[i];
        PyObject *id = PyLong_FromLongLong(s->mid);
        PyObject *start = i > 0 && self->slots[i - 1].t == s->t0 ? Py_NewRef(Py_None)
                                                                  : PyFloat_FromDouble(s->t0);
        PyObject *end = i < ended ? PyFloat_FromDouble(s->t) : NULL;
        if (id == NULL || start == NULL || (i < ended && end == NULL)) {
            Py_XDECREF(id);
            Py_XDECREF(start);
            Py_XDECREF(end);
            goto done;
        }
        PyTuple_SET_ITEM(ids, i, id);
        PyTuple_SET_ITEM(t0, i, start);
        if (end != NULL)
            PyTuple_SET_ITEM(t, i, end);
        if (!(same && n))
            PyTuple_SET_ITEM(types, i, Py_NewRef(s->name));
    }
    res = PyTuple_Pack(4, ids, types, t0, t);
done:
    Py_XDECREF(ids);
    Py_XDECREF(types);
    Py_XDECREF(t0);
    Py_XDECREF(t);
    return res;
}

static PyObject *
HandleRun_get_count(HandleRunObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromLongLong(HandleRun_events(self));
}

static PyObject *
HandleRun_get_last_seq(HandleRunObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromLongLong(self->seq + HandleRun_events(self) - 1);
}

static PyObject *
HandleRun_get_frozen(HandleRunObject *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(self->frozen);
}

static PyObject *
HandleRun_sizeof(HandleRunObject *self, PyObject *Py_UNUSED(ignored))
{
    return PyLong_FromSsize_t(Py_TYPE(self)->tp_basicsize +
                              (Py_ssize_t)self->cap * (Py_ssize_t)sizeof(HandleSlot));
}

static PyObject *
HandleRun_repr(HandleRunObject *self)
{
    return PyUnicode_FromFormat("HandleRun(%R, seq=%lld, events=%lld)", self->actor, self->seq,
                                HandleRun_events(self));
}

static PyMethodDef HandleRun_methods[] = {
    {"begin", (PyCFunction)(void (*)(void))HandleRun_begin, METH_FASTCALL,
     "begin(msg_id, msg, fresh): the handler of msg (msg_id) begins."},
    {"end", (PyCFunction)HandleRun_end, METH_NOARGS, "end(): the open message's handler ended."},
    {"take_open", (PyCFunction)HandleRun_take_open, METH_O,
     "take_open(msg_id): the open message's (type name, t0), removed, if it is msg_id."},
    {"freeze", (PyCFunction)HandleRun_freeze, METH_NOARGS, "The run was written."},
    {"records", (PyCFunction)HandleRun_records, METH_NOARGS, "The records the run stands for."},
    {"lone_record", (PyCFunction)HandleRun_lone_record, METH_NOARGS,
     "The one record the run stands for, if it stands for one."},
    {"columns", (PyCFunction)HandleRun_columns, METH_NOARGS,
     "(ids, types, t0, t) as a run line writes them."},
    {"__sizeof__", (PyCFunction)HandleRun_sizeof, METH_NOARGS, NULL},
    {NULL},
};

static PyMemberDef HandleRun_members[] = {
    {"actor", T_OBJECT, offsetof(HandleRunObject, actor), READONLY, NULL},
    {"clock", T_OBJECT, offsetof(HandleRunObject, clock), READONLY, NULL},
    {"seq", T_LONGLONG, offsetof(HandleRunObject, seq), READONLY, NULL},
    {"offset", T_DOUBLE, offsetof(HandleRunObject, offset), READONLY, NULL},
    {NULL},
};

static PyGetSetDef HandleRun_getset[] = {
    {"items", (getter)HandleRun_get_items, NULL,
     "msg_id, type name, t0, t per message (the open one without t).", NULL},
    {"count", (getter)HandleRun_get_count, NULL, "Events the run stands for.", NULL},
    {"last_seq", (getter)HandleRun_get_last_seq, NULL, NULL, NULL},
    {"frozen", (getter)HandleRun_get_frozen, NULL, "Whether the run was written.", NULL},
    {NULL},
};

static PyTypeObject HandleRunType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "trioxide.traces._cruns.HandleRun",
    .tp_doc = "Tells to an actor handled back to back (see traces._runs.PyHandleRun).",
    .tp_basicsize = sizeof(HandleRunObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = HandleRun_new,
    .tp_dealloc = (destructor)HandleRun_dealloc,
    .tp_repr = (reprfunc)HandleRun_repr,
    .tp_methods = HandleRun_methods,
    .tp_members = HandleRun_members,
    .tp_getset = HandleRun_getset,
};

/* -- SendRun -------------------------------------------------------------------------- */

typedef struct {
    PyObject_HEAD
    PyObject *actor, *sender, *cause, *cls, *clock;
    PyObject *encode; /* msg -> its payload (msgspec.Raw), or NULL: no payloads */
    long long seq;
    double offset;
    int mono, frozen;
    int n, cap;
    double *times;
    PyObject **payloads; /* with encode: each send's payload (owned) */
} SendRunObject;

static PyTypeObject SendRunType;

/* Append a send at t (with its payload, owned from here on, if the run has payloads). */
static int
SendRun_push(SendRunObject *self, double t, PyObject *payload)
{
    if (self->n == self->cap) {
        int cap = self->cap ? self->cap * 2 : 8;
        if (cap > run_max && run_max > self->n)
            cap = run_max;
        double *times = PyMem_Realloc(self->times, (size_t)cap * sizeof(double));
        if (times == NULL)
            goto nomem;
        self->times = times;
        if (self->encode != NULL) {
            PyObject **payloads =
                PyMem_Realloc(self->payloads, (size_t)cap * sizeof(PyObject *));
            if (payloads == NULL)
                goto nomem;
            self->payloads = payloads;
        }
        self->cap = cap;
    }
    if (self->encode != NULL)
        self->payloads[self->n] = payload;
    self->times[self->n++] = t;
    return 0;
nomem:
    Py_XDECREF(payload);
    PyErr_NoMemory();
    return -1;
}

static PyObject *
SendRun_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"actor", "sender", "cause",  "cls",      "seq", "clock",
                             "offset", "times",  "encode", "payloads", NULL};
    PyObject *actor, *sender, *cause, *cls, *clock, *times;
    PyObject *encode = Py_None, *payloads = NULL;
    long long seq;
    double offset;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "UOOOLOdO|$OO:SendRun", kwlist, &actor,
                                     &sender, &cause, &cls, &seq, &clock, &offset, &times,
                                     &encode, &payloads))
        return NULL;
    if (!PyCallable_Check(clock)) {
        PyErr_Format(PyExc_TypeError, "clock must be callable, got %R", clock);
        return NULL;
    }
    if (encode != Py_None && !PyCallable_Check(encode)) {
        PyErr_Format(PyExc_TypeError, "encode must be callable or None, got %R", encode);
        return NULL;
    }
    PyObject *tseq = PySequence_Fast(times, "times must be a sequence of floats");
    if (tseq == NULL)
        return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(tseq);
    PyObject *pseq = NULL;
    if (encode != Py_None) {
        pseq = payloads == NULL ? PyTuple_New(0)
                                : PySequence_Fast(payloads, "payloads must be a sequence");
        if (pseq == NULL) {
            Py_DECREF(tseq);
            return NULL;
        }
        if (PySequence_Fast_GET_SIZE(pseq) != n) {
            PyErr_Format(PyExc_ValueError, "%zd times but %zd payloads", n,
                         PySequence_Fast_GET_SIZE(pseq));
            Py_DECREF(tseq);
            Py_DECREF(pseq);
            return NULL;
        }
    }
    else if (payloads != NULL && payloads != Py_None && PyObject_Length(payloads) != 0) {
        Py_DECREF(tseq);
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_ValueError, "payloads without encode");
        return NULL;
    }
    SendRunObject *self = (SendRunObject *)type->tp_alloc(type, 0);
    if (self == NULL) {
        Py_DECREF(tseq);
        Py_XDECREF(pseq);
        return NULL;
    }
    self->actor = Py_NewRef(actor);
    self->sender = Py_NewRef(sender);
    self->cause = Py_NewRef(cause);
    self->cls = Py_NewRef(cls);
    self->clock = Py_NewRef(clock);
    self->encode = encode == Py_None ? NULL : Py_NewRef(encode);
    self->seq = seq;
    self->offset = offset;
    self->mono = clock == perf_counter;
    for (Py_ssize_t i = 0; i < n; i++) {
        double t = PyFloat_AsDouble(PySequence_Fast_GET_ITEM(tseq, i));
        PyObject *payload = pseq != NULL ? Py_NewRef(PySequence_Fast_GET_ITEM(pseq, i)) : NULL;
        if (t == -1.0 && PyErr_Occurred()) {
            Py_XDECREF(payload);
            goto fail;
        }
        if (SendRun_push(self, t, payload) < 0)
            goto fail;
    }
    Py_DECREF(tseq);
    Py_XDECREF(pseq);
    return (PyObject *)self;
fail:
    Py_DECREF(tseq);
    Py_XDECREF(pseq);
    Py_DECREF(self);
    return NULL;
}

static void
SendRun_dealloc(SendRunObject *self)
{
    if (self->payloads != NULL) {
        for (int i = 0; i < self->n; i++)
            Py_DECREF(self->payloads[i]);
        PyMem_Free(self->payloads);
    }
    Py_XDECREF(self->encode);
    PyMem_Free(self->times);
    Py_XDECREF(self->actor);
    Py_XDECREF(self->sender);
    Py_XDECREF(self->cause);
    Py_XDECREF(self->cls);
    Py_XDECREF(self->clock);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* add(actor, msg, sender, cause): if this is the run's send again (the same actor, sender
 * and cause objects, msg of exactly the run's class) and the run has room, its time (and
 * its payload, encode(msg), if the run has payloads) is recorded now and its msg_id
 * returned; otherwise None. Nothing changed if it returns None or raises. */
static PyObject *
SendRun_add(SendRunObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_Format(PyExc_TypeError, "add() takes 4 arguments (%zd given)", nargs);
        return NULL;
    }
    if (self->frozen || self->n >= run_max || args[0] != self->actor ||
        (PyObject *)Py_TYPE(args[1]) != self->cls || args[2] != self->sender ||
        args[3] != self->cause)
        Py_RETURN_NONE;
    PyObject *payload = NULL;
    if (self->encode != NULL && (payload = PyObject_CallOneArg(self->encode, args[1])) == NULL)
        return NULL;
    double t;
    if (read_clock(self->clock, self->mono, self->offset, &t) < 0) {
        Py_XDECREF(payload);
        return NULL;
    }
    if (SendRun_push(self, t, payload) < 0)
        return NULL;
    return PyLong_FromLongLong(self->seq + self->n - 1);
}

static PyObject *
SendRun_freeze(SendRunObject *self, PyObject *Py_UNUSED(ignored))
{
    if (!self->frozen && self->cap > self->n && self->n > 0 && self->encode == NULL) {
        /* Written: keep only what is used (a run with payloads keeps its capacity: its
         * two arrays share it). */
        double *times = PyMem_Realloc(self->times, (size_t)self->n * sizeof(double));
        if (times != NULL) {
            self->times = times;
            self->cap = self->n;
        }
    }
    self->frozen = 1;
    Py_RETURN_NONE;
}

static PyObject *
SendRun_send_event(SendRunObject *self, int i)
{
    PyObject *name = PyType_Check(self->cls) ? PyType_GetName((PyTypeObject *)self->cls)
                                             : PyObject_GetAttrString(self->cls, "__name__");
    if (name == NULL)
        return NULL;
    long long seq = self->seq + i;
    PyObject *e;
    if (self->encode == NULL) {
        e = make_event(seq, self->times[i], s_send, self->actor, self->sender, seq, self->cause,
                       name, 0, 0.0);
    }
    else {
        /* TraceEvent(seq, t, "send", actor, sender, seq, cause, None, name, payload) */
        PyObject *a[10] = {PyLong_FromLongLong(seq), PyFloat_FromDouble(self->times[i]), s_send,
                           self->actor, self->sender, NULL, self->cause, Py_None, name,
                           self->payloads[i]};
        a[5] = a[0];
        e = a[0] != NULL && a[1] != NULL ? PyObject_Vectorcall(event_type, a, 10, NULL) : NULL;
        Py_XDECREF(a[0]);
        Py_XDECREF(a[1]);
    }
    Py_DECREF(name);
    return e;
}

static PyObject *
SendRun_records(SendRunObject *self, PyObject *Py_UNUSED(ignored))
{
    if (check_bound() < 0)
        return NULL;
    PyObject *out = PyList_New(0);
    if (out == NULL)
        return NULL;
    for (int i = 0; i < self->n; i++) {
        PyObject *e = SendRun_send_event(self, i);
        if (e == NULL || PyList_Append(out, e) < 0) {
            Py_XDECREF(e);
            Py_DECREF(out);
            return NULL;
        }
        Py_DECREF(e);
    }
    return out;
}

static PyObject *
SendRun_lone_record(SendRunObject *self, PyObject *Py_UNUSED(ignored))
{
    if (check_bound() < 0)
        return NULL;
    if (self->n != 1)
        Py_RETURN_NONE;
    return SendRun_send_event(self, 0);
}

static PyObject *
SendRun_get_times(SendRunObject *self, void *Py_UNUSED(closure))
{
    PyObject *out = PyTuple_New(self->n);
    if (out == NULL)
        return NULL;
    for (int i = 0; i < self->n; i++) {
        PyObject *t = PyFloat_FromDouble(self->times[i]);
        if (t == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyTuple_SET_ITEM(out, i, t);
    }
    return out;
}

static PyObject *
SendRun_get_count(SendRunObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromLong(self->n);
}

static PyObject *
SendRun_get_last_seq(SendRunObject *self, void *Py_UNUSED(closure))
{
    return PyLong_FromLongLong(self->seq + self->n - 1);
}

static PyObject *
SendRun_get_frozen(SendRunObject *self, void *Py_UNUSED(closure))
{
    return PyBool_FromLong(self->frozen);
}

static PyObject *
SendRun_get_payloads(SendRunObject *self, void *Py_UNUSED(closure))
{
    if (self->encode == NULL)
        return PyTuple_New(0);
    PyObject *out = PyTuple_New(self->n);
    if (out == NULL)
        return NULL;
    for (int i = 0; i < self->n; i++)
        PyTuple_SET_ITEM(out, i, Py_NewRef(self->payloads[i]));
    return out;
}

static PyObject *
SendRun_get_encode(SendRunObject *self, void *Py_UNUSED(closure))
{
    return Py_NewRef(self->encode != NULL ? self->encode : Py_None);
}

static PyObject *
SendRun_sizeof(SendRunObject *self, PyObject *Py_UNUSED(ignored))
{
    Py_ssize_t per = sizeof(double) + (self->encode != NULL ? sizeof(PyObject *) : 0);
    return PyLong_FromSsize_t(Py_TYPE(self)->tp_basicsize + (Py_ssize_t)self->cap * per);
}

static PyObject *
SendRun_repr(SendRunObject *self)
{
    return PyUnicode_FromFormat("SendRun(%R, seq=%lld, events=%d)", self->actor, self->seq,
                                self->n);
}

static PyMethodDef SendRun_methods[] = {
    {"add", (PyCFunction)(void (*)(void))SendRun_add, METH_FASTCALL,
     "add(actor, msg, sender, cause): the send's msg_id if the run took it, else None."},
    {"freeze", (PyCFunction)SendRun_freeze, METH_NOARGS, "The run was written."},
    {"records", (PyCFunction)SendRun_records, METH_NOARGS, "The send events the run stands for."},
    {"lone_record", (PyCFunction)SendRun_lone_record, METH_NOARGS,
     "The one send a run of one stands for."},
    {"__sizeof__", (PyCFunction)SendRun_sizeof, METH_NOARGS, NULL},
    {NULL},
};

static PyMemberDef SendRun_members[] = {
    {"actor", T_OBJECT, offsetof(SendRunObject, actor), READONLY, NULL},
    {"sender", T_OBJECT, offsetof(SendRunObject, sender), READONLY, NULL},
    {"cause", T_OBJECT, offsetof(SendRunObject, cause), READONLY, NULL},
    {"cls", T_OBJECT, offsetof(SendRunObject, cls), READONLY, NULL},
    {"clock", T_OBJECT, offsetof(SendRunObject, clock), READONLY, NULL},
    {"seq", T_LONGLONG, offsetof(SendRunObject, seq), READONLY, NULL},
    {"offset", T_DOUBLE, offsetof(SendRunObject, offset), READONLY, NULL},
    {NULL},
};

static PyGetSetDef SendRun_getset[] = {
    {"times", (getter)SendRun_get_times, NULL, "Each send's t.", NULL},
    {"payloads", (getter)SendRun_get_payloads, NULL, "Each send's payload (with encode).", NULL},
    {"encode", (getter)SendRun_get_encode, NULL, "msg -> its payload, or None.", NULL},
    {"count", (getter)SendRun_get_count, NULL, "Events the run stands for.", NULL},
    {"last_seq", (getter)SendRun_get_last_seq, NULL, NULL, NULL},
    {"frozen", (getter)SendRun_get_frozen, NULL, "Whether the run was written.", NULL},
    {NULL},
};

static PyTypeObject SendRunType = {
    PyVarObject_HEAD_INIT(NULL, 0).tp_name = "trioxide.traces._cruns.SendRun",
    .tp_doc = "Tells of one shape sent back to back (see traces._runs.PySendRun).",
    .tp_basicsize = sizeof(SendRunObject),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = SendRun_new,
    .tp_dealloc = (destructor)SendRun_dealloc,
    .tp_repr = (reprfunc)SendRun_repr,
    .tp_methods = SendRun_methods,
    .tp_members = SendRun_members,
    .tp_getset = SendRun_getset,
};

/* -- module --------------------------------------------------------------------------- */

static PyObject *
cruns_bind(PyObject *Py_UNUSED(module), PyObject *args)
{
    PyObject *event, *payload;
    int max;
    if (!PyArg_ParseTuple(args, "OOi:bind", &event, &payload, &max))
        return NULL;
    if (max <= 0) {
        PyErr_Format(PyExc_ValueError, "run_max must be positive, got %d", max);
        return NULL;
    }
    Py_XSETREF(event_type, Py_NewRef(event));
    Py_XSETREF(no_payload, Py_NewRef(payload));
    run_max = max;
    Py_RETURN_NONE;
}

static PyMethodDef cruns_methods[] = {
    {"bind", cruns_bind, METH_VARARGS,
     "bind(TraceEvent, NO_PAYLOAD, run_max): what the runs build and how long they grow."},
    {NULL},
};

static struct PyModuleDef cruns_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "trioxide.traces._cruns",
    .m_doc = "Compiled run recorders (see traces._runs).",
    .m_size = -1,
    .m_methods = cruns_methods,
};

PyMODINIT_FUNC
PyInit__cruns(void)
{
    if (PyType_Ready(&HandleRunType) < 0 || PyType_Ready(&SendRunType) < 0)
        return NULL;
    if (perf_counter == NULL) {
        PyObject *time = PyImport_ImportModule("time");
        if (time == NULL)
            return NULL;
        perf_counter = PyObject_GetAttrString(time, "perf_counter");
        Py_DECREF(time);
        if (perf_counter == NULL)
            return NULL;
        s_send = PyUnicode_InternFromString("send");
        s_handle = PyUnicode_InternFromString("handle");
        s_receive = PyUnicode_InternFromString("receive");
        s_ok = PyUnicode_InternFromString("ok");
        if (!s_send || !s_handle || !s_receive || !s_ok)
            return NULL;
    }
    PyObject *m = PyModule_Create(&cruns_module);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "HandleRun", (PyObject *)&HandleRunType) < 0 ||
        PyModule_AddObjectRef(m, "SendRun", (PyObject *)&SendRunType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
