%%% @doc JSON for the command's `--json' output (OTP 25 has no `json'
%%% module; it came in OTP 27). Encoding only, of any term:
%%% maps become objects (keys as text), lists arrays (a printable string
%%% is text), binaries text (UTF-8; other bytes as `\u00XX'), integers and
%%% floats numbers, `true', `false' and `null' themselves, `undefined'
%%% null, other atoms text, tuples arrays, and pids, references, ports and
%%% funs their printed form.
-module(bc_gitops_json).

-export([encode/1]).

%% @doc `Term' as JSON text (UTF-8).
-spec encode(term()) -> binary().
encode(Term) ->
    iolist_to_binary(value(Term)).

-spec value(term()) -> iodata().
value(true) -> <<"true">>;
value(false) -> <<"false">>;
value(null) -> <<"null">>;
value(undefined) -> <<"null">>;
value(A) when is_atom(A) -> string(atom_to_binary(A, utf8));
value(B) when is_binary(B) -> string(B);
value(I) when is_integer(I) -> integer_to_binary(I);
value(F) when is_float(F) -> float_to_binary(F, [short]);
value(M) when is_map(M) ->
    Pairs = [[string(key(K)), $:, value(V)] || {K, V} <- lists:sort(maps:to_list(M))],
    [${, lists:join($,, Pairs), $}];
value(L) when is_list(L) ->
    case L =/= [] andalso io_lib:printable_unicode_list(L) of
        true -> string(unicode:characters_to_binary(L));
        false -> array(L)
    end;
value(T) when is_tuple(T) -> array(tuple_to_list(T));
value(Other) -> string(iolist_to_binary(io_lib:format("~p", [Other]))).

%% A proper list as an array; an improper one as its printed form.
-spec array(list()) -> iodata().
array(L) ->
    try [$[, lists:join($,, [value(E) || E <- L]), $]]
    catch error:_ -> string(iolist_to_binary(io_lib:format("~p", [L])))
    end.

-spec key(term()) -> binary().
key(K) when is_atom(K) -> atom_to_binary(K, utf8);
key(K) when is_binary(K) -> K;
key(K) -> iolist_to_binary(io_lib:format("~0tp", [K])).

%% A string; bytes that are not UTF-8 are kept, one `\u00XX' each.
-spec string(binary()) -> iodata().
string(Bin) ->
    [$", escape(Bin), $"].

-spec escape(binary()) -> iodata().
escape(<<>>) -> [];
escape(<<$", R/binary>>) -> [<<"\\\"">> | escape(R)];
escape(<<$\\, R/binary>>) -> [<<"\\\\">> | escape(R)];
escape(<<$\n, R/binary>>) -> [<<"\\n">> | escape(R)];
escape(<<$\r, R/binary>>) -> [<<"\\r">> | escape(R)];
escape(<<$\t, R/binary>>) -> [<<"\\t">> | escape(R)];
escape(<<C, R/binary>>) when C < 16#20 -> [io_lib:format("\\u~4.16.0B", [C]) | escape(R)];
escape(<<C/utf8, R/binary>>) -> [<<C/utf8>> | escape(R)];
escape(<<C, R/binary>>) -> [io_lib:format("\\u~4.16.0B", [C]) | escape(R)].
