#!/usr/bin/python3
"""A D-Bus service for ferry's tests, activated on the test buses as org.ferry.Test.

/org/ferry/Test (interface org.ferry.Test, and org.freedesktop.DBus.ObjectManager):
  Types(every type) echoes its arguments; Nothing(); Fail(s) fails with org.ferry.Test.Error.Failed;
  Sleep(u ms); Emit(s) emits Signal(s, u) and the body-less Empty() before it replies;
  Flood(u n) sends Signal("flood", i) for i in 0..n from a second connection of its own (which
  owns org.ferry.Test.Flood), as fast as the bus takes them (written to the socket at once, so
  that the benchmarks measure the bridges, not this script), and replies once the bus has
  handled them all;
  SetCounter(i) changes Counter (announced with its value) and Hidden (announced only as
  invalidated) before it replies; AddItem(s) / RemoveItem(s) add and remove the object
  /org/ferry/Test/items/NAME (interface org.ferry.Test.Item, property Name) through the
  ObjectManager before they reply; Quit() replies, then exits.
Properties: Counter i (read), Hidden s (read), Writable s (readwrite).
"""

import os
import socket
import struct
import sys

from gi.repository import Gio, GLib

NAME = "org.ferry.Test"
FLOOD_NAME = "org.ferry.Test.Flood"
PATH = "/org/ferry/Test"
TYPES = "ybnqiuxtdsogvayasa{sv}a{is}(is)aay"

XML = """
<node>
  <interface name="org.ferry.Test">
    <method name="Types">
      TYPES_ARGS
    </method>
    <method name="Nothing"/>
    <method name="Fail"><arg type="s" direction="in"/></method>
    <method name="Sleep"><arg type="u" direction="in"/></method>
    <method name="Emit"><arg type="s" direction="in"/></method>
    <method name="Flood"><arg type="u" direction="in"/></method>
    <method name="SetCounter"><arg type="i" direction="in"/></method>
    <method name="AddItem"><arg type="s" direction="in"/></method>
    <method name="RemoveItem"><arg type="s" direction="in"/></method>
    <method name="Quit"/>
    <signal name="Signal"><arg type="s"/><arg type="u"/></signal>
    <signal name="Empty"/>
    <property name="Counter" type="i" access="read"/>
    <property name="Hidden" type="s" access="read"/>
    <property name="Writable" type="s" access="readwrite"/>
  </interface>
  <interface name="org.freedesktop.DBus.ObjectManager">
    <method name="GetManagedObjects"><arg type="a{oa{sa{sv}}}" direction="out"/></method>
    <signal name="InterfacesAdded"><arg type="o"/><arg type="a{sa{sv}}"/></signal>
    <signal name="InterfacesRemoved"><arg type="o"/><arg type="as"/></signal>
  </interface>
</node>
""".replace("TYPES_ARGS", "".join(
    '<arg type="%s" direction="%s"/>' % (t, d)
    for d in ("in", "out") for t in GLib.Variant.split_signature("(" + TYPES + ")")))

ITEM_XML = """
<node>
  <interface name="org.ferry.Test.Item">
    <property name="Name" type="s" access="read"/>
  </interface>
</node>
"""

state = {"Counter": 0, "Hidden": "hidden-0", "Writable": "initial"}
items = {}  # path -> (name, registration id)
loop = GLib.MainLoop()


def split(sig):
    return GLib.Variant.split_signature(sig)


def item_props(name):
    return {"Name": GLib.Variant("s", name)}


def emit(conn, path, iface, member, sig, value):
    conn.emit_signal(None, path, iface, member, GLib.Variant(sig, value) if sig else None)


def on_call(conn, sender, path, iface, method, params, inv):
    if iface == "org.freedesktop.DBus.ObjectManager" and method == "GetManagedObjects":
        objs = {p: {"org.ferry.Test.Item": item_props(n)} for p, (n, _) in items.items()}
        inv.return_value(GLib.Variant("(a{oa{sa{sv}}})", (objs,)))
    elif method == "Types":
        inv.return_value(params)
    elif method == "Nothing":
        inv.return_value(None)
    elif method == "Fail":
        inv.return_dbus_error("org.ferry.Test.Error.Failed", params[0])
    elif method == "Sleep":
        GLib.timeout_add(params[0], lambda: inv.return_value(None) or False)
    elif method == "Emit":
        emit(conn, PATH, "org.ferry.Test", "Signal", "(su)", (params[0], len(params[0])))
        emit(conn, PATH, "org.ferry.Test", "Empty", None, None)
        inv.return_value(None)
    elif method == "Flood":
        flooder.flood(params[0])
        inv.return_value(None)
    elif method == "SetCounter":
        state["Counter"] = params[0]
        state["Hidden"] = f"hidden-{params[0]}"
        emit(conn, PATH, "org.freedesktop.DBus.Properties", "PropertiesChanged", "(sa{sv}as)",
             ("org.ferry.Test", {"Counter": GLib.Variant("i", params[0])}, ["Hidden"]))
        inv.return_value(None)
    elif method == "AddItem":
        name = params[0]
        path = f"{PATH}/items/{name}"
        if path not in items:
            info = Gio.DBusNodeInfo.new_for_xml(ITEM_XML).interfaces[0]
            reg = conn.register_object(path, info, None,
                                       lambda *a, n=name: GLib.Variant("s", n), None)
            items[path] = (name, reg)
            emit(conn, PATH, "org.freedesktop.DBus.ObjectManager", "InterfacesAdded", "(oa{sa{sv}})",
                 (path, {"org.ferry.Test.Item": item_props(name)}))
        inv.return_value(None)
    elif method == "RemoveItem":
        path = f"{PATH}/items/{params[0]}"
        if path in items:
            conn.unregister_object(items.pop(path)[1])
            emit(conn, PATH, "org.freedesktop.DBus.ObjectManager", "InterfacesRemoved", "(oas)",
                 (path, ["org.ferry.Test.Item"]))
        inv.return_value(None)
    elif method == "Quit":
        inv.return_value(None)
        conn.flush_sync(None)
        GLib.idle_add(loop.quit)
    else:
        inv.return_dbus_error("org.freedesktop.DBus.Error.UnknownMethod", method)


class Flooder:
    """A second, raw connection to the bus that sends signals without GDBus in between."""

    def __init__(self):
        self.sock = None
        self.serial = 0

    def message(self, m):
        self.serial += 1
        m.set_serial(self.serial)
        m.set_byte_order(Gio.DBusMessageByteOrder.LITTLE_ENDIAN)
        return bytearray(m.to_blob(Gio.DBusCapabilityFlags.NONE))

    def call(self, member, sig=None, args=None):
        """A call to the bus itself: its bytes and serial."""
        m = Gio.DBusMessage.new_method_call("org.freedesktop.DBus", "/org/freedesktop/DBus",
                                            "org.freedesktop.DBus", member)
        if sig:
            m.set_body(GLib.Variant(sig, args))
        return self.message(m), self.serial

    def wait_reply(self, serial):
        """Read messages until the reply to `serial`."""
        while True:
            head = self.read(16)
            blob = head + self.read(Gio.DBusMessage.bytes_needed(head) - 16)
            m = Gio.DBusMessage.new_from_blob(blob, Gio.DBusCapabilityFlags.NONE)
            if m.get_reply_serial() == serial:
                if m.get_message_type() == Gio.DBusMessageType.ERROR:
                    raise RuntimeError(m.get_error_name())
                return

    def read(self, n):
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            if not chunk:
                raise EOFError("the bus closed the connection")
            data += chunk
        return data

    def connect(self):
        address = os.environ["DBUS_STARTER_ADDRESS"]
        path = dict(kv.split("=", 1) for kv in address.split(":", 1)[1].split(","))["path"]
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.sock.sendall(b"\0AUTH EXTERNAL " + str(os.geteuid()).encode().hex().encode() + b"\r\n")
        line = b""
        while not line.endswith(b"\r\n"):
            line += self.read(1)
        if not line.startswith(b"OK "):
            raise RuntimeError(line)
        hello, serial = self.call("Hello")
        self.sock.sendall(b"BEGIN\r\n" + hello)
        self.wait_reply(serial)
        request, serial = self.call("RequestName", "(su)", (FLOOD_NAME, 0))
        self.sock.sendall(request)
        self.wait_reply(serial)

    def flood(self, n):
        if self.sock is None:
            self.connect()
        m = Gio.DBusMessage.new_signal(PATH, "org.ferry.Test", "Signal")
        m.set_body(GLib.Variant("(su)", ("flood", 0)))
        template = self.message(m)
        # Only the serial (bytes 8-11) and the last argument (the last 4 bytes) change.
        blobs = bytearray()
        for i in range(n):
            struct.pack_into("<I", template, 8, self.serial + i)
            struct.pack_into("<I", template, len(template) - 4, i)
            blobs += template
        self.serial += n
        # The bus handles a connection's messages in order: once it answers a call sent after
        # the signals, it has passed every one of them on.
        ping, serial = self.call("GetId")
        self.sock.sendall(blobs + ping)
        self.wait_reply(serial)


flooder = Flooder()


def get_property(conn, sender, path, iface, prop):
    types = {"Counter": "i", "Hidden": "s", "Writable": "s"}
    return GLib.Variant(types[prop], state[prop])


def set_property(conn, sender, path, iface, prop, value):
    state[prop] = value.unpack()
    emit(conn, PATH, "org.freedesktop.DBus.Properties", "PropertiesChanged", "(sa{sv}as)",
         ("org.ferry.Test", {prop: value}, []))
    return True


def main():
    conn = Gio.bus_get_sync(Gio.BusType.STARTER, None)
    node = Gio.DBusNodeInfo.new_for_xml(XML)
    for info in node.interfaces:
        conn.register_object(PATH, info, on_call, get_property, set_property)
    Gio.bus_own_name_on_connection(conn, NAME, Gio.BusNameOwnerFlags.NONE, None,
                                   lambda *a: loop.quit())
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
