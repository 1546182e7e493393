%%% @doc JSON for the HTTP face: webhook payloads in, status and
%%% notifications out.
%%%
%%% Decoding is serde_json in the NIF ({@link bc_gitops_nif:json_decode/1}):
%%% untrusted input never meets a hand-written parser, and no atom is made
%%% from it. Encoding is of bc_gitops' own terms, here:
%%% <ul>
%%% <li>maps are objects (keys: atoms, binaries, numbers or anything
%%%     printed), lists are arrays, unless they are printable text;</li>
%%% <li>binaries are strings (one that is not UTF-8 is printed as a
%%%     term), `true' and `false' are themselves, `null' and `undefined'
%%%     are `null', other atoms are strings;</li>
%%% <li>anything else (a tuple, a pid) is a string of the term as
%%%     `~0tp' prints it: error reasons stay readable.</li>
%%% </ul>
-module(bc_gitops_json).

-export([decode/1, encode/1, text/1]).

%% @doc Decodes one JSON document.
-spec decode(binary()) -> {ok, term()} | {error, {json, pos_integer(), pos_integer(), binary()}}.
decode(Bytes) when is_binary(Bytes) ->
    case bc_gitops_nif:json_decode(Bytes) of
        {ok, _} = Ok -> Ok;
        {error, {Line, Column, Message}} -> {error, {json, Line, Column, Message}}
    end.

%% @doc Encodes `Term' (see the module doc) as UTF-8 JSON.
-spec encode(term()) -> binary().
encode(Term) ->
    iolist_to_binary(value(Term)).

%% @doc A term as readable text: binaries and printable lists as they
%% are, anything else as `~0tp' prints it.
-spec text(term()) -> binary().
text(B) when is_binary(B) ->
    case unicode:characters_to_binary(B) of
        B -> B;
        _ -> printed(B)
    end;
text(A) when is_atom(A) ->
    atom_to_binary(A, utf8);
text(L) when is_list(L), L =/= [] ->
    case io_lib:printable_unicode_list(L) of
        true -> unicode:characters_to_binary(L);
        false -> printed(L)
    end;
text(T) ->
    printed(T).

-spec printed(term()) -> binary().
printed(T) ->
    unicode:characters_to_binary(io_lib:format("~0tp", [T])).

-spec value(term()) -> iodata().
value(true) -> <<"true">>;
value(false) -> <<"false">>;
value(null) -> <<"null">>;
value(undefined) -> <<"null">>;
value(A) when is_atom(A) -> string(atom_to_binary(A, utf8));
value(I) when is_integer(I) -> integer_to_binary(I);
value(F) when is_float(F) -> float_to_binary(F, [short]);
value(B) when is_binary(B) -> string(text(B));
value(M) when is_map(M) ->
    Pairs = [[string(key(K)), $:, value(V)] || {K, V} <- lists:sort(maps:to_list(M))],
    [${, lists:join($,, Pairs), $}];
value(L) when is_list(L) ->
    case L =/= [] andalso io_lib:printable_unicode_list(L) of
        true -> string(unicode:characters_to_binary(L));
        false -> array(L)
    end;
value(T) ->
    string(printed(T)).

%% A proper list is an array; an improper one is printed.
-spec array(list()) -> iodata().
array(L) ->
    try [$[, lists:join($,, [value(V) || V <- L]), $]]
    catch error:_ -> string(printed(L))
    end.

-spec key(term()) -> binary().
key(K) when is_atom(K); is_binary(K) -> text(K);
key(K) when is_integer(K) -> integer_to_binary(K);
key(K) -> text(K).

-spec string(binary()) -> iodata().
string(B) ->
    [$", escape(B, 0, B, []), $"].

%% Escapes quotes, backslashes and control characters; everything else
%% (valid UTF-8) goes as it is, in runs.
-spec escape(binary(), non_neg_integer(), binary(), iodata()) -> iodata().
escape(<<C, Rest/binary>>, Run, All, Acc) when C < 16#20; C =:= $"; C =:= $\\ ->
    Start = byte_size(All) - byte_size(Rest) - 1 - Run,
    escape(Rest, 0, All, [Acc, binary:part(All, Start, Run), escaped(C)]);
escape(<<_, Rest/binary>>, Run, All, Acc) ->
    escape(Rest, Run + 1, All, Acc);
escape(<<>>, Run, All, Acc) ->
    [Acc, binary:part(All, byte_size(All) - Run, Run)].

-spec escaped(byte()) -> iodata().
escaped($") -> <<"\\\"">>;
escaped($\\) -> <<"\\\\">>;
escaped($\n) -> <<"\\n">>;
escaped($\r) -> <<"\\r">>;
escaped($\t) -> <<"\\t">>;
escaped(C) -> io_lib:format("\\u~4.16.0b", [C]).
