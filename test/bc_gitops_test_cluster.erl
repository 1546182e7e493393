%%% BEAM nodes for the cluster tests, each a real peer node (OTP `peer') in
%%% a network namespace of its own, joined by a bridge: each node has its
%%% own loopback (so every node's app can listen on the same port, as on
%%% separate hosts), and a node can be cut off the network for real.
%%%
%%% Names, namespaces, the bridge and the subnet are derived from the OS
%%% pid of the test node and a counter, so two test runs never collide.
%%% stop/1 stops every node and deletes what start/1 made. Needs root and
%%% iproute2 (scripts/setup.sh installs it); anything missing fails the
%%% test that asked, loudly.
-module(bc_gitops_test_cluster).

-export([start/2, stop/1, node/2, nodes/1, peer/2, call/4, call/5, kill/2, restart/2,
         cut/2, heal/2]).

%% A cluster: its id, subnet, bridge, and its nodes by index:
%% #{I => #{name, ip, ns, veth, peer}}.
-type cluster() :: #{id := string(), subnet := string(), bridge := string(),
                     nodes := #{pos_integer() => map()}, cookie := atom(),
                     prefixes := [string()]}.

%% Starts N nodes; Prefixes names them (e.g. ["web", "web", "db"]: the
%% node name is Prefix ++ Index ++ "_" ++ Id).
-spec start(pos_integer() | [string()], string()) -> cluster().
start(N, Tag) when is_integer(N) ->
    start(lists:duplicate(N, "n"), Tag);
start(Prefixes, Tag) ->
    Pid = list_to_integer(os:getpid()),
    Seq = erlang:unique_integer([positive]) rem 200,
    Id = Tag ++ integer_to_list(Pid rem 10000) ++ "x" ++ integer_to_list(Seq),
    Subnet = io_lib:format("10.~B.~B", [100 + (Pid rem 100), (Pid div 100 + Seq) rem 250]),
    Bridge = "bcb" ++ integer_to_list(Pid rem 100000) ++ "_" ++ integer_to_list(Seq),
    ok = ip(["link", "add", Bridge, "type", "bridge"]),
    ok = ip(["addr", "add", lists:flatten(Subnet) ++ ".1/24", "dev", Bridge]),
    ok = ip(["link", "set", Bridge, "up"]),
    C0 = #{id => Id, subnet => lists:flatten(Subnet), bridge => Bridge, nodes => #{},
           cookie => list_to_atom("bcg_" ++ Id), prefixes => Prefixes},
    lists:foldl(fun(I, C) -> add(I, C) end, C0, lists:seq(1, length(Prefixes))).

-spec add(pos_integer(), cluster()) -> cluster().
add(I, #{id := Id, subnet := Subnet, bridge := Bridge, nodes := Nodes,
         prefixes := Prefixes} = C) ->
    Ns = "bcn" ++ Id ++ "_" ++ integer_to_list(I),
    Veth = lists:sublist("bcv" ++ integer_to_list(erlang:phash2({Id, I}, 1 bsl 32)), 15),
    Ip = Subnet ++ "." ++ integer_to_list(I + 1),
    ok = ip(["netns", "add", Ns]),
    ok = ip(["link", "add", Veth, "type", "veth", "peer", "name", "eth0", "netns", Ns]),
    ok = ip(["link", "set", Veth, "master", Bridge, "up"]),
    ok = ip(["netns", "exec", Ns, "ip", "addr", "add", Ip ++ "/24", "dev", "eth0"]),
    ok = ip(["netns", "exec", Ns, "ip", "link", "set", "eth0", "up"]),
    ok = ip(["netns", "exec", Ns, "ip", "link", "set", "lo", "up"]),
    Name = lists:nth(I, Prefixes) ++ integer_to_list(I) ++ "_" ++ Id,
    Node = #{name => Name, ip => Ip, ns => Ns, veth => Veth,
             node => list_to_atom(Name ++ "@" ++ Ip)},
    C#{nodes := Nodes#{I => start_peer(Node, C)}}.

-spec start_peer(map(), cluster()) -> map().
start_peer(#{name := Name, ip := Ip, ns := Ns} = Node, #{cookie := Cookie}) ->
    Paths = [P || P <- code:get_path(), string:find(P, "_build") =/= nomatch],
    {ok, Peer, _} = peer:start(#{name => Name, host => Ip, longnames => true,
                                 connection => standard_io,
                                 exec => {ip_path(), ["netns", "exec", Ns,
                                                      os:find_executable("erl")]},
                                 args => ["-setcookie", atom_to_list(Cookie),
                                          "-kernel", "net_ticktime", "8" |
                                          lists:append([["-pa", P] || P <- Paths])],
                                 wait_boot => 30000}),
    Node#{peer => Peer}.

%% Stops every node and removes the namespaces and the bridge.
-spec stop(cluster()) -> ok.
stop(#{nodes := Nodes, bridge := Bridge}) ->
    _ = [catch peer:stop(P) || #{peer := P} <- maps:values(Nodes)],
    _ = [catch ip(["netns", "del", Ns]) || #{ns := Ns} <- maps:values(Nodes)],
    _ = (catch ip(["link", "del", Bridge])),
    ok.

-spec node(cluster(), pos_integer()) -> node().
node(#{nodes := Nodes}, I) -> maps:get(node, maps:get(I, Nodes)).

-spec nodes(cluster()) -> [node()].
nodes(#{nodes := Nodes}) -> [maps:get(node, maps:get(I, Nodes)) || I <- lists:sort(maps:keys(Nodes))].

-spec peer(cluster(), pos_integer()) -> pid().
peer(#{nodes := Nodes}, I) -> maps:get(peer, maps:get(I, Nodes)).

-spec call(cluster(), pos_integer(), module(), atom()) -> term().
call(C, I, M, F) -> call(C, I, M, F, []).

-spec call(cluster(), pos_integer(), module(), atom(), list()) -> term().
call(C, I, M, F, A) -> peer:call(peer(C, I), M, F, A, 120000).

%% Kills node I (its OS process: no goodbye to the others).
-spec kill(cluster(), pos_integer()) -> cluster().
kill(#{nodes := Nodes} = C, I) ->
    #{peer := Peer} = Node = maps:get(I, Nodes),
    OsPid = peer:call(Peer, os, getpid, []),
    Port = open_port({spawn_executable, os:find_executable("kill")},
                     [{args, ["-9", OsPid]}, exit_status]),
    receive {Port, {exit_status, _}} -> ok end,
    catch peer:stop(Peer),
    C#{nodes := Nodes#{I => maps:remove(peer, Node)}}.

%% Starts node I again, with the same name, address and files.
-spec restart(cluster(), pos_integer()) -> cluster().
restart(#{nodes := Nodes} = C, I) ->
    C#{nodes := Nodes#{I => start_peer(maps:get(I, Nodes), C)}}.

%% Cuts node I off the network (its link to the bridge goes down), and
%% has both sides notice at once.
-spec cut(cluster(), pos_integer()) -> ok.
cut(#{nodes := Nodes} = C, I) ->
    #{veth := Veth, node := Cut} = maps:get(I, Nodes),
    ok = ip(["link", "set", Veth, "down"]),
    Others = [J || J <- maps:keys(Nodes), J =/= I, maps:is_key(peer, maps:get(J, Nodes))],
    _ = [call(C, J, erlang, disconnect_node, [Cut]) || J <- Others],
    _ = [call(C, I, erlang, disconnect_node, [node(C, J)]) || J <- Others],
    ok.

-spec heal(cluster(), pos_integer()) -> ok.
heal(#{nodes := Nodes}, I) ->
    ip(["link", "set", maps:get(veth, maps:get(I, Nodes)), "up"]).

-spec ip([string()]) -> ok.
ip(Args) ->
    Port = open_port({spawn_executable, ip_path()},
                     [{args, Args}, exit_status, stderr_to_stdout, binary]),
    collect(Port, Args, <<>>).

collect(Port, Args, Acc) ->
    receive
        {Port, {data, D}} -> collect(Port, Args, <<Acc/binary, D/binary>>);
        {Port, {exit_status, 0}} -> ok;
        {Port, {exit_status, S}} -> error({ip, Args, S, Acc})
    after 30000 -> error({ip_timeout, Args})
    end.

-spec ip_path() -> string().
ip_path() ->
    case os:find_executable("ip", "/usr/sbin:/sbin:/usr/bin:/bin") of
        false -> error(iproute2_missing);
        Path -> Path
    end.
