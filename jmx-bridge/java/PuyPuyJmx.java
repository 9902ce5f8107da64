// The jmx-bridge's helper, compiled by build.rs and loaded into the bridge's embedded JVM.
// Rust calls read(spec) for one target each cycle; everything crosses the JNI boundary as text, so
// the Rust side needs one JNI call per target and cycle.
//
// spec: one "key=value" per line: id, url or class, user, pass, and any number of
// "bean=OBJECTNAME<TAB>ATTRIBUTE[.KEY]<TAB>stack|rate".
// Answer: "OK" then one line per value: "name<TAB>value<TAB>int|float<TAB>stack|rate[<TAB>tagkey=tagvalue...]",
// or "ERROR<TAB>message" (the connection is then dropped and re-made next cycle).

import java.lang.management.ManagementFactory;
import java.util.*;
import java.util.concurrent.ConcurrentHashMap;
import javax.management.*;
import javax.management.openmbean.CompositeData;
import javax.management.remote.*;

public final class PuyPuyJmx {
    private static final Map<String, JMXConnector> CONNECTORS = new ConcurrentHashMap<>();
    /** What each cached connector was opened with: a reload that changes it opens a new one. */
    private static final Map<String, String> OPENED_WITH = new ConcurrentHashMap<>();

    private PuyPuyJmx() {}

    public static String read(String spec) {
        Map<String, String> opts = new HashMap<>();
        List<String[]> beans = new ArrayList<>();
        for (String line : spec.split("\n")) {
            int eq = line.indexOf('=');
            if (eq < 0) continue;
            String k = line.substring(0, eq), v = line.substring(eq + 1);
            if (k.equals("bean")) beans.add(v.split("\t"));
            else opts.put(k, v);
        }
        String id = opts.getOrDefault("id", "default");
        try {
            MBeanServerConnection c = connection(id, opts);
            StringBuilder out = new StringBuilder("OK\n");
            defaults(c, out);
            for (String[] b : beans) extra(c, b, out);
            return out.toString();
        } catch (Throwable e) {
            JMXConnector old = CONNECTORS.remove(id);
            if (old != null) {
                try { old.close(); } catch (Throwable ignored) { }
            }
            String msg = e.getClass().getSimpleName() + ": " + e.getMessage();
            Throwable cause = e.getCause();
            if (cause != null) msg += " (" + cause.getClass().getSimpleName() + ": " + cause.getMessage() + ")";
            return "ERROR\t" + msg.replace('\n', ' ').replace('\t', ' ');
        }
    }

    /** Checks ObjectName syntax; returns "" when valid, else the reason. */
    public static String checkObjectName(String name) {
        try {
            new ObjectName(name);
            return "";
        } catch (Throwable e) {
            return e.getMessage() == null ? e.toString() : e.getMessage();
        }
    }

    private static MBeanServerConnection connection(String id, Map<String, String> opts) throws Exception {
        String key = opts.getOrDefault("url", "") + "\n" + opts.getOrDefault("class", "") + "\n"
            + opts.getOrDefault("user", "") + "\n" + opts.getOrDefault("pass", "");
        JMXConnector c = CONNECTORS.get(id);
        if (c != null && key.equals(OPENED_WITH.get(id))) return c.getMBeanServerConnection();
        if (c != null) {
            CONNECTORS.remove(id);
            try { c.close(); } catch (Throwable ignored) { }
        }
        String url = opts.get("url");
        if (url == null || url.isEmpty()) url = attach(opts.get("class"));
        Map<String, Object> env = new HashMap<>();
        String user = opts.get("user");
        if (user != null && !user.isEmpty()) env.put(JMXConnector.CREDENTIALS, new String[] {user, opts.getOrDefault("pass", "")});
        c = JMXConnectorFactory.connect(new JMXServiceURL(url), env);
        CONNECTORS.put(id, c);
        OPENED_WITH.put(id, key);
        return c.getMBeanServerConnection();
    }

    /** Finds a local JVM by main class through the Attach API and starts its local management agent. */
    private static String attach(String mainClass) throws Exception {
        if (mainClass == null || mainClass.isEmpty()) throw new IllegalArgumentException("neither url nor class is set");
        String self = String.valueOf(ProcessHandle.current().pid());
        for (com.sun.tools.attach.VirtualMachineDescriptor d : com.sun.tools.attach.VirtualMachine.list()) {
            if (d.id().equals(self)) continue;
            String[] words = d.displayName().split("\\s+");
            String first = words.length > 0 ? words[0] : "";
            boolean match = first.equals(mainClass) || first.endsWith("." + mainClass) || first.endsWith("/" + mainClass)
                || Arrays.asList(words).contains(mainClass) || Arrays.asList(words).contains(mainClass + ".java");
            if (!match) continue;
            com.sun.tools.attach.VirtualMachine vm = com.sun.tools.attach.VirtualMachine.attach(d.id());
            try {
                return vm.startLocalManagementAgent();
            } finally {
                vm.detach();
            }
        }
        throw new IllegalStateException("no running JVM with main class " + mainClass + " visible to this user");
    }

    private static void line(StringBuilder out, String name, Object value, String style, String... tags) {
        String kind;
        String text;
        if (value instanceof Double || value instanceof Float) {
            double d = ((Number) value).doubleValue();
            if (Double.isNaN(d) || Double.isInfinite(d)) return;
            kind = "float";
            text = Double.toString(d);
        } else if (value instanceof Number) {
            kind = "int";
            text = Long.toString(((Number) value).longValue());
        } else if (value instanceof Boolean) {
            kind = "int";
            text = ((Boolean) value) ? "1" : "0";
        } else {
            return;
        }
        out.append(name).append('\t').append(text).append('\t').append(kind).append('\t').append(style);
        for (String t : tags) out.append('\t').append(t);
        out.append('\n');
    }

    private static Object attr(MBeanServerConnection c, String bean, String attribute) {
        try {
            return c.getAttribute(new ObjectName(bean), attribute);
        } catch (Exception e) {
            return null;
        }
    }

    private static void defaults(MBeanServerConnection c, StringBuilder out) throws Exception {
        // The first call doubles as the liveness check: it throws when the target is gone.
        CompositeData heap = (CompositeData) c.getAttribute(new ObjectName("java.lang:type=Memory"), "HeapMemoryUsage");
        CompositeData nonHeap = (CompositeData) attr(c, "java.lang:type=Memory", "NonHeapMemoryUsage");
        for (String k : new String[] {"used", "committed", "max"}) {
            line(out, "jmx_heap_" + k, heap.get(k), "stack");
            if (nonHeap != null) line(out, "jmx_nonheap_" + k, nonHeap.get(k), "stack");
        }
        for (ObjectName gc : c.queryNames(new ObjectName("java.lang:type=GarbageCollector,*"), null)) {
            String name = gc.getKeyProperty("name");
            line(out, "jmx_gc_collection_count", attr(c, gc.toString(), "CollectionCount"), "stack", "gc=" + name);
            line(out, "jmx_gc_collection_time", attr(c, gc.toString(), "CollectionTime"), "rate", "gc=" + name);
        }
        String threading = "java.lang:type=Threading";
        line(out, "jmx_threadcount", attr(c, threading, "ThreadCount"), "stack");
        line(out, "jmx_peakthreadcount", attr(c, threading, "PeakThreadCount"), "stack");
        line(out, "jmx_daemonthreadcount", attr(c, threading, "DaemonThreadCount"), "stack");
        line(out, "jmx_totalstartedthreadcount", attr(c, threading, "TotalStartedThreadCount"), "stack");
        line(out, "jmx_loadedclasscount", attr(c, "java.lang:type=ClassLoading", "LoadedClassCount"), "stack");
        Object cpu = attr(c, "java.lang:type=OperatingSystem", "ProcessCpuLoad");
        if (cpu instanceof Number && ((Number) cpu).doubleValue() >= 0) line(out, "jmx_processcpuload", ((Number) cpu).doubleValue() * 100.0, "stack");
        line(out, "jmx_openfiledescriptorcount", attr(c, "java.lang:type=OperatingSystem", "OpenFileDescriptorCount"), "stack");
    }

    private static void extra(MBeanServerConnection c, String[] bean, StringBuilder out) throws Exception {
        if (bean.length < 3) return;
        String pattern = bean[0], attribute = bean[1], style = bean[2];
        String key = null;
        int dot = attribute.indexOf('.');
        if (dot > 0) {
            key = attribute.substring(dot + 1);
            attribute = attribute.substring(0, dot);
        }
        String metric = "jmx_" + (attribute + (key == null ? "" : "_" + key)).toLowerCase(Locale.ROOT);
        Set<ObjectName> names = c.queryNames(new ObjectName(pattern), null);
        for (ObjectName n : names) {
            Object v = attr(c, n.toString(), attribute);
            if (key != null && v instanceof CompositeData) {
                CompositeData cd = (CompositeData) v;
                v = cd.containsKey(key) ? cd.get(key) : null;
            }
            if (names.size() == 1 && !pattern.contains("*") && !pattern.contains("?")) line(out, metric, v, style);
            else line(out, metric, v, style, "mbean=" + n.getCanonicalName());
        }
    }

    /** For the bridge's own footprint report. */
    public static String selfInfo() {
        return "java " + System.getProperty("java.version") + ", heap max " + Runtime.getRuntime().maxMemory() + " bytes, pid " + ManagementFactory.getRuntimeMXBean().getPid();
    }
}
